package worker_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/pkg/job"
)

// A callback receives the result as JSON, through the same sender: a
// flaky callback is retried, and one that never works loses nothing (the
// result is stored anyway, with the callback's outcome).
func TestCallbacks(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	var mu sync.Mutex
	got := map[string]job.Result{}
	calls := 0
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var res job.Result
		if err := json.Unmarshal(body, &res); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("callback body %q (%v), content type %q", body, err, r.Header.Get("Content-Type"))
		}
		mu.Lock()
		calls++
		first := calls == 1
		got[res.ID] = res
		mu.Unlock()
		if r.URL.Path == "/down" || first {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer cb.Close()
	startWorkers(t, ns, pipelineOpts{MaxInflight: 1, MaxAttempts: 3})

	results := enqueueAndWait(t, ns, "callbacks", []*job.Job{
		{ID: "cb-flaky", Method: "GET", URL: srv.URL + "/a", Callback: cb.URL + "/hook"},
		{ID: "cb-down", Method: "GET", URL: srv.URL + "/b", Callback: cb.URL + "/down"},
	})
	if r := results["cb-flaky"]; !r.OK || r.Callback == nil || !r.Callback.OK || r.Callback.Attempts != 2 || r.Callback.Status != 204 {
		t.Errorf("cb-flaky: %+v callback %+v", r, r.Callback)
	}
	if r := results["cb-down"]; !r.OK || r.Callback == nil || r.Callback.OK || r.Callback.Attempts != 3 || r.Callback.Status != 503 {
		t.Errorf("cb-down: the job itself succeeded and the callback failed 3 times: %+v callback %+v", r, r.Callback)
	}
	mu.Lock()
	defer mu.Unlock()
	if got["cb-flaky"].ID != "cb-flaky" || !got["cb-flaky"].OK {
		t.Errorf("callback received %+v", got["cb-flaky"])
	}
}

// Dead letters can be listed and re-driven: a re-driven job runs afresh
// (new attempts, a result of its own) and leaves the dead-letter stream.
func TestDeadLettersRedrive(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	// The target fails the first two requests of each job, and jobs get
	// only one attempt: both end as dead letters, then succeed on re-drive.
	stop := startWorkers(t, ns, pipelineOpts{MaxAttempts: 1})
	jobs := []*job.Job{
		{ID: "d1", Method: "GET", URL: srv.URL + "/x?fail_first=1", Headers: map[string]string{"Authorization": "Bearer s3cret"}},
		{ID: "d2", Method: "GET", URL: srv.URL + "/y?fail_first=1"},
	}
	results := enqueueAndWait(t, ns, "dl", jobs)
	for _, r := range results {
		if r.OK || r.Reason != job.ReasonExhausted {
			t.Fatalf("want exhausted failures first, got %+v", r)
		}
	}
	nc, js := connect(t, ns)
	defer nc.Close()
	ctx := context.Background()
	// A result is stored before its dead letter, and the job acked after
	// both: the last of each may still be on its way.
	waitFor(t, func() bool {
		o, err := queue.Status(ctx, js, names, "dl")
		return err == nil && len(o.Batches) == 1 && o.Batches[0].DeadLetters >= 2 && o.Batches[0].Open == 0
	})
	var letters []queue.StoredDeadLetter
	if err := queue.DeadLetters(ctx, js, names, "dl", func(dl queue.StoredDeadLetter) error {
		letters = append(letters, dl)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(letters) != 2 {
		t.Fatalf("%d dead letters, want 2", len(letters))
	}
	o, err := queue.Status(ctx, js, names, "dl")
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Batches) != 1 || o.Batches[0].Results != 2 || o.Batches[0].DeadLetters != 2 || o.Batches[0].Open != 0 {
		t.Errorf("status before re-drive: %+v", o.Batches)
	}

	rep, err := queue.Redrive(ctx, js, names, "dl")
	if err != nil || rep.Redriven != 2 {
		t.Fatalf("redrive: %+v, %v", rep, err)
	}
	// Wait for the re-driven runs' results (one more each on the subject).
	waitFor(t, func() bool {
		o, err := queue.Status(ctx, js, names, "dl")
		return err == nil && len(o.Batches) == 1 && o.Batches[0].Results == 4
	})
	stop()
	o, _ = queue.Status(ctx, js, names, "dl")
	if o.Batches[0].DeadLetters != 0 {
		t.Errorf("dead letters after a successful re-drive: %d", o.Batches[0].DeadLetters)
	}
	for _, id := range []string{"d1", "d2"} {
		if k := tg.Key(id); len(k.Statuses) != 2 || k.Statuses[1] != 200 {
			t.Errorf("%s: target saw %v, want [503 200]", id, k.Statuses)
		}
	}
}

// Breaker states reported by workers are visible fleet-wide and withdrawn
// when the breaker closes.
func TestBreakerBoard(t *testing.T) {
	ns := natstest.RunServer(t)
	nc, js := connect(t, ns)
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	board, err := queue.OpenBreakerBoard(ctx, js, names, 0)
	if err != nil {
		t.Fatal(err)
	}
	rep := worker.NewBreakerReporter(board, "w1", zerolog.Nop())
	done := make(chan error, 1)
	go func() { done <- rep.Run(ctx) }()

	rep.Changed("api.example.com:443", "closed", "open")
	rep.Changed("other.example.com:443", "closed", "open")
	waitFor(t, func() bool {
		l, err := board.List(context.Background())
		return err == nil && len(l) == 2
	})
	rep.Changed("other.example.com:443", "open", "closed")
	waitFor(t, func() bool {
		l, err := board.List(context.Background())
		return err == nil && len(l) == 1 && l[0].Host == "api.example.com:443" && l[0].State == "open" && l[0].Worker == "w1"
	})
	// A worker that stops withdraws its reports.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l, _ := board.List(context.Background()); len(l) != 0 {
		t.Errorf("reports left after the worker stopped: %+v", l)
	}
}
