package worker_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
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

// A callback host that does not answer holds at most its concurrency limit
// and a few waiting callbacks of a worker's handlers: the jobs behind them
// are deferred before their requests, so another batch's jobs flow. The
// host answers only once that other batch is done; had its callbacks held
// every handler, the other batch could finish only after they ran into
// their timeout.
func TestWaitingCallbacksLeaveHandlersToOtherBatches(t *testing.T) {
	ns := natstest.RunServer(t)
	api := httptest.NewServer(target.New(target.Options{}))
	defer api.Close()
	otherDone := make(chan struct{})
	release := sync.OnceFunc(func() { close(otherDone) })
	defer release()
	var timedOut atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-otherDone:
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
			timedOut.Add(1)
		}
	}))
	defer hook.Close()
	// A rate on some other host turns the limits on; the hook host has
	// only its (adaptive) concurrency limit. One try: a callback that
	// times out fails at once, so that a broken build fails fast.
	startWorkers(t, ns, pipelineOpts{MaxInflight: 8, MaxAttempts: 1, RateLimits: "ratelimited.example.com=1/s"})

	nc, js := connect(t, ns)
	defer nc.Close()
	pub := queue.NewPublisher(js, names, 64, nil)
	for i := range 40 {
		j := &job.Job{ID: fmt.Sprintf("slow-%d", i), Batch: "slowhooks", Method: "GET", URL: api.URL + "/slow",
			Callback: hook.URL + "/hook", EnqueuedAt: time.Now().UTC()}
		if err := pub.Publish(t.Context(), j); err != nil {
			t.Fatal(err)
		}
	}
	if st := pub.Close(); st.Published != 40 {
		t.Fatalf("published %d of 40", st.Published)
	}
	other := newJobs(40, api.URL+"/other")
	for i, j := range other {
		j.ID = fmt.Sprintf("other-%d", i)
	}
	enqueueAndWait(t, ns, "other", other)
	release()
	if n := timedOut.Load(); n > 0 {
		t.Fatalf("%d callbacks ran into their timeout before the other batch was done: it waited behind them", n)
	}
	var got []job.Result
	waitFor(t, func() bool {
		got = got[:0]
		_, err := queue.ReadResults(t.Context(), js, names, "slowhooks", func(_ uint64, data []byte) error {
			r, err := job.DecodeResult(data)
			if err == nil {
				got = append(got, *r)
			}
			return err
		})
		return err == nil && len(got) == 40
	})
	for _, r := range got {
		if !r.OK || r.Attempts != 1 || r.Callback == nil || !r.Callback.OK || r.Callback.Attempts != 1 {
			t.Errorf("job %s: ok=%v attempts=%d callback %+v; want one request, one POST", r.ID, r.OK, r.Attempts, r.Callback)
		}
	}
}
