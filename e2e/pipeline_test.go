package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
)

func workerEnv(natsURL string, extra ...string) []string {
	return append([]string{
		"JETPOST_NATS_URL=" + natsURL,
		"JETPOST_ALLOWED_NETWORKS=127.0.0.0/8",
		"JETPOST_BACKOFF_BASE=10ms",
		"JETPOST_BACKOFF_MAX=50ms",
	}, extra...)
}

// The definition of done: 1,000 jobs through enqueue --wait --out and
// two worker processes against a separately started NATS server give exactly
// one result per job, and the target never sees more concurrent requests
// than the in-flight bound allows.
func TestThousandJobsTwoWorkerProcesses(t *testing.T) {
	ns := natstest.RunServer(t)
	const inflight = 8
	// The first requests are held until more are in flight than one worker
	// may send, so both workers hold jobs however the scheduler favours
	// one; with a fixed limit either can reach its bound.
	var arrived atomic.Int64
	both := &gate{}
	both.shut()
	releaseAll := both.open
	tg := target.New(target.Options{Latency: 5 * time.Millisecond, OnRequest: func(r *http.Request) {
		if n := arrived.Add(1); n == inflight+1 {
			releaseAll()
		}
		both.pass(r)
	}})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	defer releaseAll() // before srv.Close, which waits for held requests
	for _, id := range []string{"w1", "w2"} {
		w := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_WORKER_ID="+id, "JETPOST_MAX_INFLIGHT=8", "JETPOST_PREFETCH=4",
			"JETPOST_ADAPTIVE_CONCURRENCY=false"))
		w.waitLine("consuming jobs")
	}
	file := writeJobs(t, 1000, srv.URL)
	out := filepath.Join(t.TempDir(), "results.jsonl")

	code, stdout, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "e2e-1000", "--wait", "--out", out, file)
	if code != 0 {
		t.Fatalf("enqueue exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	res := readResults(t, out)
	if len(res) != 1000 {
		t.Fatalf("%d results, want 1000", len(res))
	}
	workers := map[string]int{}
	for id, r := range res {
		if !r.OK || r.Attempts != 1 || r.Batch != "e2e-1000" {
			t.Errorf("%s: %+v", id, r)
		}
		workers[r.Worker]++
	}
	if len(workers) != 2 {
		t.Errorf("results came from workers %v, want both", workers)
	}
	st := tg.Stats()
	if st.MaxInFlight > 2*inflight {
		t.Errorf("target saw %d concurrent requests; bound is %d", st.MaxInFlight, 2*inflight)
	}
	if st.Requests != 1000 || st.Duplicates != 0 {
		t.Errorf("target saw %d requests, %d duplicates", st.Requests, st.Duplicates)
	}
	if !strings.Contains(stderr, "1000 results: 1000 ok, 0 failed") {
		t.Errorf("summary missing from stderr:\n%s", stderr)
	}
	t.Logf("max concurrency at target %d (bound %d), per worker %v", st.MaxInFlight, 2*inflight, workers)
}

// Bad input: every invalid line is named with file and line, the exit status
// is 2, and nothing at all is published.
func TestInvalidInputPublishesNothing(t *testing.T) {
	ns := natstest.RunServer(t)
	path := filepath.Join(t.TempDir(), "bad.jsonl")
	content := `{"url":"https://example.com/a"}
{"url":"https://example.com/b","method":"GE T"}
{"url":"ftp://example.com/c"}
{"url":"https://example.com/d"}
{"method":"GET"}
`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), path)
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"bad.jsonl:2:", "bad.jsonl:3:", "bad.jsonl:5:", "nothing was published"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "bad.jsonl:1:") || strings.Contains(stderr, "bad.jsonl:4:") {
		t.Errorf("valid lines reported as invalid:\n%s", stderr)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if s, err := js.Stream(context.Background(), "JETPOST_JOBS"); err == nil {
		info, _ := s.Info(context.Background())
		if info.State.Msgs != 0 {
			t.Errorf("%d jobs published from an invalid file", info.State.Msgs)
		}
	}
}

// With no JETPOST_NATS_URL the worker runs its own JetStream server; enqueue
// reaches it and the example-style file completes.
func TestEmbeddedDefault(t *testing.T) {
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	addr := freeAddr(t)
	w := start(t, "worker", []string{
		"JETPOST_EMBEDDED_LISTEN=" + addr, "JETPOST_DATA_DIR=" + t.TempDir(),
		"JETPOST_ALLOWED_NETWORKS=127.0.0.0/8",
	})
	w.waitLine("started embedded NATS server")
	w.waitLine("consuming jobs")

	file := writeJobs(t, 20, srv.URL)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	code, _, stderr := runEnqueue(t, nil, "--nats", "nats://"+addr, "--wait", "--out", out, file)
	if code != 0 {
		t.Fatalf("enqueue exit %d: %s", code, stderr)
	}
	if n := len(readResults(t, out)); n != 20 {
		t.Errorf("%d results, want 20", n)
	}

	// A second embedded worker on the same address explains what to do.
	w2 := start(t, "worker", []string{"JETPOST_EMBEDDED_LISTEN=" + addr, "JETPOST_DATA_DIR=" + t.TempDir()})
	if code := w2.wait(); code == 0 {
		t.Error("second embedded worker on a taken port exited 0")
	}
	if !strings.Contains(w2.output(), "JETPOST_NATS_URL=nats://"+addr) {
		t.Errorf("port-taken message does not say what to do:\n%s", w2.output())
	}

	w.cmd.Process.Signal(syscall.SIGTERM)
	if code := w.wait(); code != 0 {
		t.Errorf("worker exit %d after SIGTERM", code)
	}
}

// Configuration explains itself: -h lists every variable, a bad value names
// the variable and exits 2 before connecting to anything.
func TestWorkerConfigErrors(t *testing.T) {
	p := start(t, "worker", []string{"JETPOST_MAX_INFLIGHT=lots", "JETPOST_NATS_URL=nats://127.0.0.1:1"})
	if code := p.wait(); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if !strings.Contains(p.output(), "JETPOST_MAX_INFLIGHT") {
		t.Errorf("error does not name the variable: %s", p.output())
	}
	p = start(t, "worker", []string{"JETPOST_BACKOFF_BASE=10s", "JETPOST_BACKOFF_MAX=1s", "JETPOST_NATS_URL=nats://127.0.0.1:1"})
	if code := p.wait(); code != 2 || !strings.Contains(p.output(), "JETPOST_BACKOFF_MAX") {
		t.Errorf("exit %d, output %s", code, p.output())
	}
}
