package worker

import (
	"net/url"
	"sync"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
)

// callbackHosts counts, per callback host, the callbacks that wait in this
// worker for the host's limits to admit them, each holding its job's
// handler. A job whose callback host already has MaxCallbacksWaiting of
// them is deferred before its request, as a job held by its own host's
// limits is: otherwise a batch whose callbacks outrun their host's rate
// would fill every handler with waiting callbacks, and every other
// batch's jobs would wait behind them.
type callbackHosts struct {
	mu    sync.Mutex
	hosts map[string]*callbackWait
}

// callbackWait is one host's waiting callbacks, and until when its limits
// asked the latest of them to wait.
type callbackWait struct {
	waiting int
	until   time.Time
}

// busy says how long a job with a callback to host should wait before it
// starts, or 0 when it may start now.
func (c *callbackHosts) busy(host string, limit int, now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hosts[host]
	if h == nil || h.waiting < limit {
		return 0
	}
	return max(h.until.Sub(now), minCallbackDefer)
}

// wait records that a callback to host waits until until; first says
// whether it is this callback's first wait, which done must then undo.
func (c *callbackHosts) wait(host string, until time.Time, first bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hosts == nil {
		c.hosts = map[string]*callbackWait{}
	}
	h := c.hosts[host]
	if h == nil {
		h = &callbackWait{}
		c.hosts[host] = h
	}
	if first {
		h.waiting++
	}
	if until.After(h.until) {
		h.until = until
	}
}

// done records that a callback to host that waited has ended. A host
// with none waiting is forgotten: hosts come from untrusted files.
func (c *callbackHosts) done(host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h := c.hosts[host]; h != nil {
		if h.waiting--; h.waiting <= 0 {
			delete(c.hosts, host)
		}
	}
}

// callbackHost is the limits' key of a job's callback URL ("" for none or
// an unreadable one, which the sender will refuse anyway).
func callbackHost(j *job.Job) string {
	if j.Callback == "" {
		return ""
	}
	u, err := url.Parse(j.Callback)
	if err != nil {
		return ""
	}
	return job.HostKey(u)
}
