package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/internal/workertest"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

var names = workertest.Names()

var streams = workertest.Streams()

// pipelineOpts are the knobs a test turns (internal/workertest's options).
type pipelineOpts = workertest.Options

// startWorkers runs o.Workers worker instances, each with its own NATS
// connection, consumer and sender, as separate processes would.
func startWorkers(t *testing.T, ns *server.Server, o pipelineOpts) (stop func()) {
	t.Helper()
	o.Names, o.Streams = names, streams
	return workertest.Start(t, ns.ClientURL(), o)
}

func connect(t *testing.T, ns *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.Setup(context.Background(), js, names, streams); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// enqueueAndWait publishes jobs as enqueue does and waits for every result.
func enqueueAndWait(t *testing.T, ns *server.Server, batch string, jobs []*job.Job) map[string]*job.Result {
	t.Helper()
	nc, js := connect(t, ns)
	defer nc.Close()
	col := enqueue.NewCollector()
	var mu sync.Mutex
	results := map[string]*job.Result{}
	col.OnResult = func(r *job.Result) {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := results[r.ID]; dup {
			t.Errorf("second result for job %s", r.ID)
		}
		results[r.ID] = r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- col.Run(ctx, js, names, batch) }()
	pub := queue.NewPublisher(js, names, 256, func(id string, dup bool, err error) {
		if err == nil && !dup {
			col.Expect(id)
		}
	})
	now := time.Now().UTC()
	for _, j := range jobs {
		j.Batch, j.EnqueuedAt = batch, now
		if err := pub.Publish(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	st := pub.Close()
	col.Seal()
	if st.Published != len(jobs) || len(st.Failed) > 0 {
		t.Fatalf("published %d of %d (%d failed)", st.Published, len(jobs), len(st.Failed))
	}
	if err := <-done; err != nil {
		t.Fatalf("collecting results: %v (have %d of %d)", err, len(results), len(jobs))
	}
	mu.Lock()
	defer mu.Unlock()
	return results
}

func newJobs(n int, url string) []*job.Job {
	jobs := make([]*job.Job, n)
	for i := range jobs {
		jobs[i] = &job.Job{ID: fmt.Sprintf("job-%05d", i), Method: "GET", URL: url}
	}
	return jobs
}

// storedResults counts the messages on a batch's result subject: the
// contract is exactly one per job, not just one seen by a collector.
func storedResults(t *testing.T, ns *server.Server, batch string) uint64 {
	t.Helper()
	nc, js := connect(t, ns)
	defer nc.Close()
	s, err := js.Stream(context.Background(), names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(names.ResultSubject(batch)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[names.ResultSubject(batch)]
}

func TestThousandJobsTwoWorkersOneResultEach(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{Latency: 2 * time.Millisecond})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	const workers, inflight = 2, 8
	startWorkers(t, ns, pipelineOpts{Workers: workers, MaxInflight: inflight, Prefetch: 4})

	results := enqueueAndWait(t, ns, "thousand", newJobs(1000, srv.URL+"/orders"))

	if len(results) != 1000 {
		t.Fatalf("got %d results, want 1000", len(results))
	}
	seenWorkers := map[string]int{}
	for id, r := range results {
		if !r.OK || r.Status != 200 || r.Attempts != 1 {
			t.Errorf("job %s: ok=%v status=%d attempts=%d err=%q", id, r.OK, r.Status, r.Attempts, r.Error)
		}
		seenWorkers[r.Worker]++
	}
	if got := storedResults(t, ns, "thousand"); got != 1000 {
		t.Errorf("results stream holds %d results for the batch, want exactly 1000", got)
	}
	st := tg.Stats()
	if st.MaxInFlight > workers*inflight {
		t.Errorf("target saw %d concurrent requests, bound is %d", st.MaxInFlight, workers*inflight)
	}
	if st.Duplicates != 0 || st.Requests != 1000 {
		t.Errorf("target saw %d requests, %d duplicates; want 1000 and 0", st.Requests, st.Duplicates)
	}
	t.Logf("max concurrent at target %d (bound %d); jobs per worker %v", st.MaxInFlight, workers*inflight, seenWorkers)
}

// A target slower than the ack wait: jobs waiting in the prefetch window and
// running jobs must both be kept alive, so nothing is redelivered and no
// request is sent twice. The server's ack timer runs on its own clock, so
// only a margin protects the verdict: keepalives go every third of the ack
// wait, and a redelivery needs one to be late by two thirds (2 s here).
// Six jobs fill the worker's hands (2 running, 4 waiting up to 2 latencies).
func TestSlowTargetCausesNoRedelivery(t *testing.T) {
	ns := natstest.RunServer(t)
	// Each request outlasts the ack wait; keepalives every third of it
	// leave a stalled worker two seconds before the server redelivers.
	tg := target.New(target.Options{Latency: 3500 * time.Millisecond})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	startWorkers(t, ns, pipelineOpts{MaxInflight: 2, Prefetch: 4, AckWait: 3 * time.Second})

	results := enqueueAndWait(t, ns, "slow", newJobs(6, srv.URL+"/slow"))

	for id, r := range results {
		if !r.OK || r.Attempts != 1 {
			t.Errorf("job %s: ok=%v attempts=%d err=%q", id, r.OK, r.Attempts, r.Error)
		}
	}
	st := tg.Stats()
	if st.Requests != 6 || st.Duplicates != 0 {
		t.Errorf("target saw %d requests and %d duplicates, want 6 and 0", st.Requests, st.Duplicates)
	}
	if st.MaxInFlight > 2 {
		t.Errorf("target saw %d concurrent requests, bound is 2", st.MaxInFlight)
	}
}

func TestRetriesAndPermanentFailures(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	startWorkers(t, ns, pipelineOpts{MaxAttempts: 5})

	jobs := []*job.Job{
		{ID: "flaky", Method: "GET", URL: srv.URL + "/flaky?fail_first=2"},
		{ID: "bad-request", Method: "POST", URL: srv.URL + "/bad?status=400"},
		{ID: "always-503", Method: "GET", URL: srv.URL + "/down?status=503"},
		{ID: "not-found", Method: "GET", URL: srv.URL + "/gone?status=404"},
	}
	results := enqueueAndWait(t, ns, "retries", jobs)

	check := func(id string, ok bool, status, attempts int, reason job.Reason) {
		t.Helper()
		r := results[id]
		if r == nil {
			t.Fatalf("no result for %s", id)
		}
		if r.OK != ok || r.Status != status || r.Attempts != attempts || r.Reason != reason {
			t.Errorf("%s: ok=%v status=%d attempts=%d reason=%q; want ok=%v status=%d attempts=%d reason=%q (error %q)",
				id, r.OK, r.Status, r.Attempts, r.Reason, ok, status, attempts, reason, r.Error)
		}
		if k := tg.Key(id); k.Requests != attempts {
			t.Errorf("%s: target saw %d requests (%v), result says %d attempts", id, k.Requests, k.Statuses, attempts)
		}
	}
	check("flaky", true, 200, 3, "")
	check("bad-request", false, 400, 1, job.ReasonPermanent)
	check("always-503", false, 503, 5, job.ReasonExhausted)
	check("not-found", false, 404, 1, job.ReasonPermanent)
	if got := tg.Key("flaky").Statuses; fmt.Sprint(got) != "[503 503 200]" {
		t.Errorf("flaky saw %v, want [503 503 200]", got)
	}

	// Every failure is also a dead letter, with its reason. A result is
	// stored before its dead letter, so the last one may still be on its way.
	nc, js := connect(t, ns)
	defer nc.Close()
	s, err := js.Stream(context.Background(), names.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	var dead uint64
	waitFor(t, func() bool {
		info, err := s.Info(context.Background())
		if err == nil {
			dead = info.State.Msgs
		}
		return dead >= 3
	})
	if dead != 3 {
		t.Errorf("dead-letter stream holds %d messages, want 3", dead)
	}
}

// With one request at a time, a host's breaker opens after three failures
// and its jobs are deferred without a request until the host recovers;
// deferrals spend no attempts. Each spends a try, so the backoff is about
// the open timeout: 20 tries outlast it whatever the machine's speed.
func TestBreakerDefersJobsWithoutSending(t *testing.T) {
	ns := natstest.RunServer(t)
	var open atomic.Bool
	var sentWhileOpen atomic.Int64
	tg := target.New(target.Options{FailRate: 1, OnRequest: func(*http.Request) {
		if open.Load() {
			sentWhileOpen.Add(1)
		}
	}})
	srv := httptest.NewServer(tg)
	defer srv.Close()

	var deferrals atomic.Int64
	var once sync.Once
	startWorkers(t, ns, pipelineOpts{
		MaxInflight: 1, Prefetch: 1, MaxAttempts: 20, Backoff: sender.Backoff{Base: 100 * time.Millisecond, Cap: 300 * time.Millisecond},
		Breaker: sender.Breaker{Failures: 3, OpenTimeout: 300 * time.Millisecond, HalfOpenRequests: 1},
		OnBreaker: func(_ string, _, to job.BreakerState) {
			open.Store(to == "open")
		},
		Observer: worker.Observer{Deferred: func(_ string, a queue.Action) {
			if a == queue.NakAfter && deferrals.Add(1) >= 5 {
				// Enough jobs were turned away: let the host recover.
				once.Do(func() {
					tg.SetOptions(target.Options{OnRequest: tg.Options().OnRequest})
				})
			}
		}},
	})

	// Every job can only succeed once the host has recovered; if it never
	// does, the results say so (a wait for it here could hang).
	results := enqueueAndWait(t, ns, "breaker", newJobs(10, srv.URL+"/down"))

	attempts := 0
	for id, r := range results {
		if !r.OK {
			t.Errorf("job %s: ok=%v attempts=%d err=%q", id, r.OK, r.Attempts, r.Error)
		}
		attempts += r.Attempts
	}
	if n := sentWhileOpen.Load(); n != 0 {
		t.Errorf("%d requests reached the host while its breaker was open", n)
	}
	if got := tg.Stats().Requests; got != int64(attempts) {
		t.Errorf("target saw %d requests but results count %d attempts: deferrals were counted or lost", got, attempts)
	}
	if deferrals.Load() < 5 {
		t.Errorf("only %d deferrals", deferrals.Load())
	}
	t.Logf("%d deferrals, %d requests for 10 jobs", deferrals.Load(), attempts)
}

// A message that is not a job goes to the dead-letter stream once and is
// never retried.
func TestPoisonMessageIsDeadLettered(t *testing.T) {
	ns := natstest.RunServer(t)
	startWorkers(t, ns, pipelineOpts{})
	nc, js := connect(t, ns)
	defer nc.Close()
	ctx := context.Background()
	if _, err := js.Publish(ctx, names.JobSubject("poison"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, names.JobSubject("poison"), []byte(`{"id":"x","batch":"poison","method":"GET","url":"ftp://nope"}`)); err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, names.DLQStream(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		m, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
		if err != nil {
			t.Fatalf("dead letter %d: %v", i+1, err)
		}
		var dl queue.DeadLetter
		if err := jsonUnmarshal(m.Data(), &dl); err != nil {
			t.Fatal(err)
		}
		if dl.Result.Reason != job.ReasonInvalid || dl.Result.Error == "" || dl.Result.Batch != "poison" {
			t.Errorf("dead letter %d: %+v", i+1, dl.Result)
		}
	}
	// The jobs stream is a work queue: terminated messages are gone.
	s, _ := js.Stream(ctx, names.JobsStream())
	waitFor(t, func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}
