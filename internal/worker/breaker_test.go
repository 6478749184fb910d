package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

// outcomeSender answers every Send with the same outcome: pure logic for
// the worker's decisions, no request made.
type outcomeSender struct{ o sender.Outcome }

func (f outcomeSender) SendUntil(context.Context, *job.Job, context.Context) sender.Outcome {
	return f.o
}

func (f outcomeSender) Post(context.Context, sender.Callback) sender.Outcome {
	return sender.Outcome{Class: sender.Succeeded, Attempted: true, Status: 204}
}

// A breaker's turn-away spends a try, not an attempt: the job comes back
// after its backoff for that try (capped by the breaker's next probe) and
// fails with reason breaker_open once attempts and turn-aways reach the
// budget. A host limit's deferral spends nothing.
func TestBreakerTurnAwaySpendsATry(t *testing.T) {
	turnAway := sender.Outcome{Class: sender.Postponed, RetryAfter: time.Hour,
		Err: fmt.Errorf("not sent: %w", &sender.BreakerOpenError{Host: "api.example.com:443", State: "open"})}
	backoff := sender.Backoff{Base: time.Second, Cap: 4 * time.Second}
	w := worker.New(worker.Config{ID: "w", MaxAttempts: 4, Backoff: backoff}, outcomeSender{turnAway}, worker.Observer{}, zerolog.Nop())
	j := &job.Job{ID: "j", Batch: "b", Method: "GET", URL: "https://api.example.com/orders/7"}

	for _, tc := range []struct{ attempts, turned int }{{0, 0}, {1, 0}, {2, 0}, {0, 2}} {
		dec := w.Handle(t.Context(), &queue.Delivery{Job: j, Attempts: tc.attempts, TurnedAway: tc.turned})
		if dec.Action != queue.NakAfter || dec.Attempts != tc.attempts || dec.TurnedAway != tc.turned+1 {
			t.Fatalf("%+v: decision %+v, want a defer recording one more turn-away", tc, dec)
		}
		if ceiling := backoff.Delay(tc.attempts+tc.turned+1, func() float64 { return 1 }); dec.Delay > ceiling {
			t.Errorf("%+v: delay %v, over the backoff ceiling %v for that try", tc, dec.Delay, ceiling)
		}
	}
	for _, tc := range []struct{ attempts, turned int }{{3, 0}, {1, 2}, {0, 3}} {
		dec := w.Handle(t.Context(), &queue.Delivery{Job: j, Attempts: tc.attempts, TurnedAway: tc.turned})
		r := dec.Result
		if dec.Action != queue.AckWithResult || r == nil || r.OK || r.Reason != job.ReasonBreakerOpen || r.Attempts != tc.attempts ||
			!strings.Contains(r.Error, "circuit breaker for api.example.com:443 is open") {
			t.Fatalf("%+v: decision %+v result %+v, want failed, reason breaker_open, attempts kept", tc, dec, r)
		}
	}

	// The last try is a request that fails: exhausted, unless the breaker
	// took one of the tries.
	failing := sender.Outcome{Class: sender.Retryable, Attempted: true, Status: 503, Err: fmt.Errorf("status 503")}
	w = worker.New(worker.Config{ID: "w", MaxAttempts: 4, Backoff: backoff}, outcomeSender{failing}, worker.Observer{}, zerolog.Nop())
	for turned, want := range []job.Reason{job.ReasonExhausted, job.ReasonBreakerOpen} {
		dec := w.Handle(t.Context(), &queue.Delivery{Job: j, Attempts: 3 - turned, TurnedAway: turned})
		if r := dec.Result; dec.Action != queue.AckWithResult || r.Reason != want || r.Attempts != 4-turned || r.Status != 503 {
			t.Errorf("%d turned away: %+v %+v, want %s", turned, dec, r, want)
		}
	}

	limited := sender.Outcome{Class: sender.Postponed, RetryAfter: 50 * time.Millisecond,
		Err: fmt.Errorf("not sent: %w", &sender.NotAdmittedError{Wait: 50 * time.Millisecond})}
	w = worker.New(worker.Config{ID: "w", MaxAttempts: 1}, outcomeSender{limited}, worker.Observer{}, zerolog.Nop())
	dec := w.Handle(t.Context(), &queue.Delivery{Job: j, TurnedAway: 0})
	if dec.Action != queue.NakAfter || dec.TurnedAway != 0 || dec.Delay != 50*time.Millisecond {
		t.Errorf("host limit: %+v, want a defer after the limit's wait that spends nothing", dec)
	}
}

// endpointTarget answers 503 on /orders/7 (and everywhere while down), 200
// elsewhere, counting requests per job.
type endpointTarget struct {
	down atomic.Bool
	mu   sync.Mutex
	hits map[string]int // job id -> requests
}

func (e *endpointTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.hits[r.Header.Get("Idempotency-Key")]++
	e.mu.Unlock()
	if e.down.Load() || r.URL.Path == "/orders/7" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
}

func (e *endpointTarget) requests(id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hits[id]
}

func newEndpointTarget(t *testing.T) (*endpointTarget, string) {
	e := &endpointTarget{hits: map[string]int{}}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return e, srv.URL
}

// One always-failing endpoint on a healthy host: its jobs fail after their
// attempts (reason exhausted), the host's other jobs succeed, and the
// breaker, judging the host's failure rate, never opens. The broken jobs
// are 1 in 20, so whatever the timing, the failures never make half the
// answers: when the k-th broken job is sent, at least 19k healthy ones were
// sent before it, all but 8 (in flight) answered.
func TestBrokenEndpointDoesNotOpenTheHostsBreaker(t *testing.T) {
	ns := natstest.RunServer(t)
	tg, url := newEndpointTarget(t)
	var rec transitions
	const maxAttempts = 4
	startWorkers(t, ns, pipelineOpts{MaxInflight: 8, MaxAttempts: maxAttempts, OnBreaker: rec.add,
		Breaker: sender.Breaker{Failures: 10, FailureRatio: 0.5, Window: time.Hour, OpenTimeout: time.Hour}})
	jobs := make([]*job.Job, 200)
	for i := range jobs {
		path := fmt.Sprintf("/orders/%d", 100+i)
		if i%20 == 19 {
			path = "/orders/7"
		}
		jobs[i] = &job.Job{ID: fmt.Sprintf("job-%03d", i), Method: "GET", URL: url + path}
	}
	results := enqueueAndWait(t, ns, "broken-endpoint", jobs)
	if n := storedResults(t, ns, "broken-endpoint"); n != uint64(len(jobs)) {
		t.Errorf("%d results stored, want %d", n, len(jobs))
	}
	for i, j := range jobs {
		r := results[j.ID]
		switch {
		case r == nil:
			t.Errorf("%s: no result", j.ID)
		case i%20 == 19 && (r.OK || r.Reason != job.ReasonExhausted || r.Attempts != maxAttempts || r.Status != 503):
			t.Errorf("%s (broken endpoint): %+v, want failed after %d attempts, exhausted", j.ID, r, maxAttempts)
		case i%20 != 19 && (!r.OK || r.Attempts != 1):
			t.Errorf("%s (healthy): %+v, want ok at the first attempt", j.ID, r)
		}
		if r != nil && tg.requests(j.ID) != r.Attempts {
			t.Errorf("%s: target saw %d requests, result says %d attempts", j.ID, tg.requests(j.ID), r.Attempts)
		}
	}
	if got := rec.all(); len(got) != 0 {
		t.Errorf("breaker transitions %v, want none", got)
	}
}

// A whole host down opens its breaker; jobs turned away spend tries, and
// every job ends within its tries (failed, breaker_open when any try was
// turned away) with a dead letter, although the breaker stays open far
// longer than the test: the open timeout does not hold them.
func TestHostDownJobsEndWithinTheirTries(t *testing.T) {
	ns := natstest.RunServer(t)
	tg, url := newEndpointTarget(t)
	tg.down.Store(true)
	var rec transitions
	const maxAttempts = 4
	startWorkers(t, ns, pipelineOpts{MaxInflight: 4, MaxAttempts: maxAttempts, OnBreaker: rec.add,
		Breaker: sender.Breaker{Failures: 3, FailureRatio: 1, Window: time.Hour, OpenTimeout: time.Hour}})
	jobs := newJobs(30, url+"/orders")
	results := enqueueAndWait(t, ns, "host-down", jobs)
	if n := storedResults(t, ns, "host-down"); n != uint64(len(jobs)) {
		t.Errorf("%d results stored, want %d", n, len(jobs))
	}
	turnedAway := 0
	for _, j := range jobs {
		r := results[j.ID]
		switch {
		case r == nil:
			t.Fatalf("%s: no result", j.ID)
		case r.OK || r.Attempts > maxAttempts || tg.requests(j.ID) != r.Attempts:
			t.Errorf("%s: %+v; target saw %d requests", j.ID, r, tg.requests(j.ID))
		case r.Attempts < maxAttempts && r.Reason != job.ReasonBreakerOpen:
			t.Errorf("%s: %d attempts, reason %q; want breaker_open for a job the breaker turned away", j.ID, r.Attempts, r.Reason)
		case r.Attempts == maxAttempts && r.Reason != job.ReasonExhausted:
			t.Errorf("%s: all %d attempts sent, reason %q; want exhausted", j.ID, r.Attempts, r.Reason)
		}
		if r.Reason == job.ReasonBreakerOpen {
			turnedAway++
		}
	}
	if turnedAway == 0 {
		t.Error("no job was turned away by the open breaker")
	}
	if got := rec.all(); len(got) != 1 || got[0] != "closed->open" {
		t.Errorf("breaker transitions %v, want one, closed->open", got)
	}
	nc, js := connect(t, ns)
	defer nc.Close()
	// A failed job's dead letter is stored just after its result: the
	// last one may still be on its way when the last result is read.
	letters := 0
	waitFor(t, func() bool {
		letters = 0
		err := queue.DeadLetters(context.Background(), js, names, "host-down", func(queue.StoredDeadLetter) error { letters++; return nil })
		return err == nil && letters >= len(jobs)
	})
	if letters != len(jobs) {
		t.Errorf("%d dead letters, want %d (one per failed job, re-drivable)", letters, len(jobs))
	}
}

// The request a half-open breaker lets through is a waiting job's real
// attempt: the job turned away while the breaker was open comes back, is
// the probe, and its success closes the breaker and is its result.
func TestHalfOpenProbeIsAWaitingJobsAttempt(t *testing.T) {
	ns := natstest.RunServer(t)
	tg, url := newEndpointTarget(t)
	tg.down.Store(true)
	var rec transitions
	startWorkers(t, ns, pipelineOpts{MaxInflight: 1, MaxAttempts: 40,
		Backoff: sender.Backoff{Base: 20 * time.Millisecond, Cap: 50 * time.Millisecond},
		// The host recovers as soon as the breaker opens: the first
		// request after that is the probe.
		OnBreaker: func(host string, from, to job.BreakerState) { rec.add(host, from, to); tg.down.Store(false) },
		Breaker:   sender.Breaker{Failures: 1, FailureRatio: 1, Window: time.Hour, OpenTimeout: 50 * time.Millisecond}})
	results := enqueueAndWait(t, ns, "probe", []*job.Job{{ID: "waiting", Method: "GET", URL: url + "/orders/1"}})
	r := results["waiting"]
	if r == nil || !r.OK || r.Attempts != 2 || tg.requests("waiting") != 2 {
		t.Fatalf("result %+v, target saw %d requests; want ok after 2 attempts, the second being the probe", r, tg.requests("waiting"))
	}
	want := []string{"closed->open", "open->half-open", "half-open->closed"}
	if got := rec.all(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

type transitions struct {
	mu  sync.Mutex
	got []string
}

func (tr *transitions) add(_ string, from, to job.BreakerState) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.got = append(tr.got, string(from)+"->"+string(to))
}

func (tr *transitions) all() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.got...)
}
