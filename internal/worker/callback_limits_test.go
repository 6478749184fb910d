package worker_test

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
)

// Callbacks go through the same per-host limits as jobs: two workers, a
// fleet-wide rate on the callback host, and callbacks from jobs to another,
// unlimited host. Turned away, a callback waits without spending its tries:
// each is delivered, with one POST.
func TestCallbacksKeepTheirHostsFleetRate(t *testing.T) {
	ns := natstest.RunServer(t)
	api := httptest.NewServer(target.New(target.Options{}))
	defer api.Close()
	hooks := target.New(target.Options{RecordArrivals: true})
	hook := httptest.NewServer(hooks)
	defer hook.Close()
	const n, rate, burst, workers = 15, 5, 1, 2
	startWorkers(t, ns, pipelineOpts{Workers: workers, MaxAttempts: 2,
		RateLimits: fmt.Sprintf("%s=%d/s:%d", hook.Listener.Addr(), rate, burst)})

	jobs := newJobs(n, api.URL+"/x")
	for _, j := range jobs {
		j.Callback = hook.URL + "/hook"
	}
	results := enqueueAndWait(t, ns, "cbrate", jobs)
	for id, r := range results {
		if !r.OK || r.Callback == nil || !r.Callback.OK || r.Callback.Attempts != 1 {
			t.Errorf("job %s: ok=%v callback %+v; want delivered with one POST, its waits free", id, r.OK, r.Callback)
		}
	}
	arr := hooks.Arrivals()
	if len(arr) != n {
		t.Fatalf("the callback host received %d POSTs for %d jobs", len(arr), n)
	}
	// However fast or slow the machine, n POSTs at rate/s (burst b, and a
	// lease of at least one token per worker) cannot arrive in less than
	// (n - b - workers)/rate seconds. Slack for the first POST being late.
	span := arr[len(arr)-1].Sub(arr[0])
	minSpan := time.Duration(float64(n-burst-workers)/rate*float64(time.Second)) - 500*time.Millisecond
	t.Logf("%d callbacks in %v: %.1f/s (limit %d/s)", n, span, float64(n-1)/span.Seconds(), rate)
	if span < minSpan {
		t.Fatalf("%d callbacks arrived within %v; at %d/s they need at least %v", n, span, rate, minSpan)
	}
}
