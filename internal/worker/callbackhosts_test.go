package worker

import (
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
)

// Pure bookkeeping: a host is busy once limit callbacks to it wait, for as
// long as the latest of them was told; one that ends frees its place, and
// a host with none waiting is forgotten.
func TestCallbackHostsBookkeeping(t *testing.T) {
	var c callbackHosts
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const host, limit = "hooks.example.com:443", 2
	if d := c.busy(host, limit, now); d != 0 {
		t.Fatalf("unknown host busy for %v", d)
	}
	c.wait(host, now.Add(time.Second), true)
	c.wait(host, now.Add(3*time.Second), false) // the same callback, told again
	if d := c.busy(host, limit, now); d != 0 {
		t.Fatalf("one callback waiting, limit %d: busy for %v", limit, d)
	}
	c.wait(host, now.Add(2*time.Second), true)
	if d := c.busy(host, limit, now); d != 3*time.Second {
		t.Fatalf("busy for %v, want until the latest wait, 3s", d)
	}
	if d := c.busy(host, limit, now.Add(time.Hour)); d != minCallbackDefer {
		t.Errorf("past its waits: busy for %v, want the minimum %v", d, minCallbackDefer)
	}
	if d := c.busy("other.example.com:443", limit, now); d != 0 {
		t.Errorf("another host busy for %v", d)
	}
	c.done(host)
	if d := c.busy(host, limit, now); d != 0 {
		t.Errorf("one of two ended: busy for %v", d)
	}
	c.done(host)
	if len(c.hosts) != 0 {
		t.Errorf("hosts with nothing waiting kept: %v", c.hosts)
	}
	for u, want := range map[string]string{"": "", "https://Hooks.Example.com/cb": "hooks.example.com:443", "http://[::1]:8080/x": "[::1]:8080", "http://%zz": ""} {
		if got := callbackHost(&job.Job{Callback: u}); got != want {
			t.Errorf("callbackHost(%q) = %q, want %q", u, got, want)
		}
	}
}
