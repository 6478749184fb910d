package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
)

// SIGTERM the only worker mid-batch: it stops pulling, lets its requests in
// flight finish, stores their results, hands back what it had not started
// and exits 0. A second worker finishes the batch. Nothing is lost and the
// target sees no request twice.
func TestSigtermMidBatchLosesNothing(t *testing.T) {
	ns := natstest.RunServer(t)
	var received atomic.Int64
	// Requests after the 20th wait until w1 has been told to stop, so w1
	// cannot finish the batch while the test is slow to send the signal.
	halfway, signalled := make(chan struct{}), &gate{}
	signalled.shut()
	signalSent := signalled.open
	tg := target.New(target.Options{Latency: 100 * time.Millisecond, OnRequest: func(r *http.Request) {
		switch n := received.Add(1); {
		case n == 20:
			close(halfway)
		case n > 20:
			signalled.pass(r)
		}
	}})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	defer signalSent() // before srv.Close, which waits for held requests

	w1 := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_WORKER_ID=w1", "JETPOST_MAX_INFLIGHT=4", "JETPOST_PREFETCH=4"))
	w1.waitLine("consuming jobs")
	file := writeJobs(t, 60, srv.URL)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	done := make(chan struct{})
	var code int
	var stderr string
	go func() {
		defer close(done)
		code, _, stderr = runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "sigterm", "--wait", "--out", out, file)
	}()

	<-halfway
	if err := w1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalSent()
	if c := w1.wait(); c != 0 {
		t.Fatalf("worker exit %d after SIGTERM", c)
	}
	w1.waitLine("every job in hand is settled")

	w2 := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_WORKER_ID=w2", "JETPOST_MAX_INFLIGHT=4"))
	w2.waitLine("consuming jobs")
	<-done
	if code != 0 {
		t.Fatalf("enqueue exit %d: %s", code, stderr)
	}
	res := readResults(t, out)
	if len(res) != 60 {
		t.Fatalf("%d results, want 60", len(res))
	}
	byWorker := map[string]int{}
	for id, r := range res {
		if !r.OK || r.Attempts != 1 {
			t.Errorf("%s: ok=%v attempts=%d", id, r.OK, r.Attempts)
		}
		byWorker[r.Worker]++
	}
	st := tg.Stats()
	if st.Requests != 60 || st.Duplicates != 0 {
		t.Errorf("target saw %d requests and %d duplicates; want 60 and 0", st.Requests, st.Duplicates)
	}
	if byWorker["w1"] == 0 || byWorker["w2"] == 0 {
		t.Errorf("results by worker %v: both should have finished jobs", byWorker)
	}
	t.Logf("results by worker: %v", byWorker)
}

// Requests still running when the shutdown grace period ends are cancelled
// and their jobs handed back at once, without spending an attempt.
func TestShutdownDeadlineHandsBackWithoutSpendingAttempts(t *testing.T) {
	ns := natstest.RunServer(t)
	var slow atomic.Bool
	slow.Store(true)
	started := make(chan struct{}, 100)
	tg := target.New(target.Options{OnRequest: func(r *http.Request) {
		if slow.Load() {
			// The server notices a client hanging up only once the body
			// has been read.
			_, _ = io.Copy(io.Discard, r.Body)
			started <- struct{}{}
			<-r.Context().Done() // hang until the client gives up
		}
	}})
	srv := httptest.NewServer(tg)
	defer srv.Close()

	w1 := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_WORKER_ID=w1", "JETPOST_MAX_INFLIGHT=3",
		"JETPOST_SHUTDOWN_TIMEOUT=200ms", "JETPOST_REQUEST_TIMEOUT=10m"))
	w1.waitLine("consuming jobs")
	file := writeJobs(t, 3, srv.URL)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	done := make(chan struct{})
	var code int
	go func() {
		defer close(done)
		code, _, _ = runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "deadline", "--wait", "--out", out, file)
	}()
	for range 3 {
		<-started
	}
	_ = w1.cmd.Process.Signal(syscall.SIGTERM)
	if c := w1.wait(); c != 0 {
		t.Fatalf("worker exit %d", c)
	}
	slow.Store(false)
	w2 := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_WORKER_ID=w2"))
	w2.waitLine("consuming jobs")
	<-done
	if code != 0 {
		t.Fatalf("enqueue exit %d", code)
	}
	for id, r := range readResults(t, out) {
		if !r.OK || r.Attempts != 1 || r.Worker != "w2" {
			t.Errorf("%s: ok=%v attempts=%d worker=%s; the cancelled request must not count", id, r.OK, r.Attempts, r.Worker)
		}
	}
	// The target notices a client hanging up on its own time.
	var canceled int64
	waitUntil(t, func() bool { canceled = tg.Stats().Canceled; return canceled >= 3 })
	if canceled != 3 {
		t.Errorf("target saw %d cancelled requests, want 3", canceled)
	}
}
