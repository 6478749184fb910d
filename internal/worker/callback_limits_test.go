package worker_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
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

// Callbacks waiting for their host's rate hold at most a few of a worker's
// handlers: the jobs behind them are deferred before their requests, so
// another batch, published after, is done long before them. Held
// callbacks filling every handler, the other batch would get a handler
// only as the first batch's callbacks drained, at their host's rate, and
// finish after nearly all of them. An order of events, not a race
// against the clock: the first batch needs at least 40 s for its
// callbacks, the other one half of that to lose.
func TestWaitingCallbacksLeaveHandlersToOtherBatches(t *testing.T) {
	ns := natstest.RunServer(t)
	api := httptest.NewServer(target.New(target.Options{}))
	defer api.Close()
	var delivered atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		delivered.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	const n, rate = 200, 5
	startWorkers(t, ns, pipelineOpts{MaxInflight: 8, RateLimits: fmt.Sprintf("%s=%d/s:1", hook.Listener.Addr(), rate)})

	nc, js := connect(t, ns)
	defer nc.Close()
	pub := queue.NewPublisher(js, names, 256, nil)
	for i := range n {
		j := &job.Job{ID: fmt.Sprintf("slow-%d", i), Batch: "slowhooks", Method: "GET", URL: api.URL + "/slow",
			Callback: hook.URL + "/hook", EnqueuedAt: time.Now().UTC()}
		if err := pub.Publish(t.Context(), j); err != nil {
			t.Fatal(err)
		}
	}
	if st := pub.Close(); st.Published != n {
		t.Fatalf("published %d of %d", st.Published, n)
	}
	other := newJobs(n, api.URL+"/other")
	for i, j := range other {
		j.ID = fmt.Sprintf("other-%d", i)
	}
	enqueueAndWait(t, ns, "other", other)
	got := delivered.Load()
	t.Logf("the other batch was done after %d of the first batch's %d callbacks", got, n)
	if got > n/2 {
		t.Fatalf("the other batch was done only after %d of the first batch's %d callbacks: it waited behind them", got, n)
	}
}
