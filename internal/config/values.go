package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/jetpost/jetpost/pkg/hostlimit"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

// RetryStatusSet is JETPOST_RETRY_STATUSES parsed.
func (c *Worker) RetryStatusSet() (sender.StatusSet, error) {
	s, err := sender.ParseStatusSet(c.RetryStatuses)
	if err != nil {
		return nil, fmt.Errorf("JETPOST_RETRY_STATUSES=%q: %w", c.RetryStatuses, err)
	}
	return s, nil
}

// Policy is what a job may ask of this deployment (JETPOST_REPLY_PREFIXES,
// JETPOST_MAX_TIMEOUT): enqueue and workers read the same variables.
func (c *Common) Policy() (job.Policy, error) {
	if c.MaxTimeout <= 0 || c.MaxTimeout > job.MaxTimeout {
		return job.Policy{}, fmt.Errorf("JETPOST_MAX_TIMEOUT=%s: must be positive and at most %s", c.MaxTimeout, job.MaxTimeout)
	}
	prefixes, err := job.ParseReplyPrefixes(c.ReplyPrefixes, c.SubjectPrefix)
	if err != nil {
		return job.Policy{}, fmt.Errorf("JETPOST_REPLY_PREFIXES=%q: %w", c.ReplyPrefixes, err)
	}
	return job.Policy{ReplyPrefixes: prefixes, SubjectPrefix: c.SubjectPrefix, MaxTimeout: c.MaxTimeout}, nil
}

// AllowedPrefixes is JETPOST_ALLOWED_NETWORKS parsed.
func (c *Worker) AllowedPrefixes() ([]netip.Prefix, error) {
	p, err := sender.ParseNetworks(c.AllowedNetworks)
	if err != nil {
		return nil, fmt.Errorf("JETPOST_ALLOWED_NETWORKS=%q: %w", c.AllowedNetworks, err)
	}
	return p, nil
}

// RateRules is JETPOST_RATE_LIMITS parsed.
func (c *Worker) RateRules() (hostlimit.Rules, error) {
	r, err := hostlimit.ParseRules(c.RateLimits)
	if err != nil {
		return hostlimit.Rules{}, fmt.Errorf("JETPOST_RATE_LIMITS=%q: %w", c.RateLimits, err)
	}
	return r, nil
}

// SenderRedirects is JETPOST_MAX_REDIRECTS as sender.Config reads it: there
// 0 means the default, here it means none.
func (c *Worker) SenderRedirects() int {
	if c.MaxRedirects == 0 {
		return -1
	}
	return c.MaxRedirects
}

// HostInflight is the requests in flight per host from one worker (the
// fixed limit, or the adaptive one's ceiling): JETPOST_HOST_MAX_INFLIGHT,
// at most JETPOST_MAX_INFLIGHT, which 0 stands for.
func (c *Worker) HostInflight() int {
	if c.HostMaxInflight > 0 {
		return min(c.HostMaxInflight, c.MaxInflight)
	}
	return c.MaxInflight
}

// ID is JETPOST_WORKER_ID, or HOSTNAME-PID without it.
func (c *Worker) ID() string {
	if c.WorkerID != "" {
		return c.WorkerID
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// validateValues checks the variables that have a syntax of their own, so
// that they too stop the process before it connects.
func (c *Worker) validateValues() error {
	_, err1 := c.RetryStatusSet()
	_, err2 := c.AllowedPrefixes()
	_, err3 := c.RateRules()
	var err4 error
	if c.IdempotencyHeader != "" && !job.ValidToken(c.IdempotencyHeader) {
		err4 = fmt.Errorf("JETPOST_IDEMPOTENCY_HEADER=%q: not a valid header name", c.IdempotencyHeader)
	}
	return errors.Join(err1, err2, err3, err4)
}

// StripEnv is environ without any JETPOST_ variable, so a developer's shell
// settings cannot reach the processes tests and benchmarks start.
func StripEnv(environ []string) []string {
	var env []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, Prefix+"_") {
			env = append(env, kv)
		}
	}
	return env
}
