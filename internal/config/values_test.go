package config

import (
	"strings"
	"testing"
	"time"
)

func TestValuesWithASyntaxNameTheVariable(t *testing.T) {
	cases := [][2]string{
		{"JETPOST_RETRY_STATUSES", "5xx,abc"},
		{"JETPOST_ALLOWED_NETWORKS", "10.0.0.0/99"},
		{"JETPOST_RATE_LIMITS", "api.example.com=fast"},
		{"JETPOST_IDEMPOTENCY_HEADER", "Idempotency Key"},
		{"JETPOST_REPLY_PREFIXES", "replies,$JS.API"},
		{"JETPOST_REPLY_PREFIXES", "jetpost.results"},
		{"JETPOST_REPLY_PREFIXES", "a.*.b"},
		{"JETPOST_MAX_TIMEOUT", "25h"},
		{"JETPOST_MAX_TIMEOUT", "0s"},
	}
	for _, tc := range cases {
		t.Run(tc[0]+"="+tc[1], func(t *testing.T) {
			setenv(t, tc[0], tc[1])
			_, err := LoadWorker()
			if err == nil || !strings.Contains(err.Error(), tc[0]+"=") {
				t.Errorf("error %v, want one naming %s", err, tc[0])
			}
		})
	}
}

func TestParsedValues(t *testing.T) {
	setenv(t, "JETPOST_RETRY_STATUSES", "503", "JETPOST_ALLOWED_NETWORKS", "127.0.0.0/8,10.0.0.0/8",
		"JETPOST_RATE_LIMITS", "api.example.com=10/s", "JETPOST_MAX_REDIRECTS", "0",
		"JETPOST_MAX_INFLIGHT", "8", "JETPOST_HOST_MAX_INFLIGHT", "20", "JETPOST_WORKER_ID", "w7")
	c, err := LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	statuses, _ := c.RetryStatusSet()
	if !statuses.Contains(503) || statuses.Contains(500) {
		t.Errorf("retry statuses %v, want 503 only", statuses)
	}
	if nets, _ := c.AllowedPrefixes(); len(nets) != 2 {
		t.Errorf("allowed networks %v, want 2", nets)
	}
	if rules, _ := c.RateRules(); rules.Len() != 1 {
		t.Errorf("rate rules %v, want 1", rules)
	}
	if c.SenderRedirects() != -1 || c.HostInflight() != 8 || c.ID() != "w7" {
		t.Errorf("redirects %d, per host %d, id %q; want -1, 8, w7", c.SenderRedirects(), c.HostInflight(), c.ID())
	}
}

func TestPolicyFromEnvironment(t *testing.T) {
	setenv(t, "JETPOST_REPLY_PREFIXES", "replies.>,acme.out", "JETPOST_MAX_TIMEOUT", "2m", "JETPOST_SUBJECT_PREFIX", "tenant1")
	c, err := LoadCommon()
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Policy()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.ReplyPrefixes, ",") != "replies,acme.out" || p.SubjectPrefix != "tenant1" || p.MaxTimeout != 2*time.Minute {
		t.Errorf("policy %+v", p)
	}
	// The ceiling is for what jobs ask; the operator's own default is not
	// held to it.
	setenv(t, "JETPOST_REQUEST_TIMEOUT", "10m")
	if _, err := LoadWorker(); err != nil {
		t.Errorf("request timeout above the ceiling: %v", err)
	}
}
