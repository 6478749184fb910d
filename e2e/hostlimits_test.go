package e2e

import (
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
)

// Issue 8: three worker processes share one rate limit through NATS. The
// assertion is a lower bound on how long the target's arrivals take, which
// a loaded machine can only lengthen: without coordination, three workers
// would each send at the full rate and finish in a third of it.
func TestFleetRateLimitAcrossWorkerProcesses(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{RecordArrivals: true})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	const n, rate, burst = 300, 100, 5
	limits := fmt.Sprintf("JETPOST_RATE_LIMITS=%s=%d/s:%d", srv.Listener.Addr(), rate, burst)
	for _, id := range []string{"w1", "w2", "w3"} {
		w := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_WORKER_ID="+id, "JETPOST_MAX_INFLIGHT=16", limits))
		w.waitLine("consuming jobs")
	}
	out, file := filepath.Join(t.TempDir(), "results.jsonl"), writeJobs(t, n, srv.URL)
	// No token for the host exists before the batch does.
	began := time.Now()
	if code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "rated", "--wait", "--out", out, file); code != 0 {
		t.Fatalf("enqueue exit %d: %s", code, stderr)
	}
	workers := map[string]int{}
	for id, r := range readResults(t, out) {
		if !r.OK || r.Attempts != 1 {
			t.Fatalf("job %s: ok=%v attempts=%d (%s): a deferral must not spend an attempt", id, r.OK, r.Attempts, r.Error)
		}
		workers[r.Worker]++
	}
	arr := tg.Arrivals()
	if len(arr) != n {
		t.Fatalf("target received %d requests for %d jobs", len(arr), n)
	}
	// The bucket grants at most burst + rate × elapsed tokens from the
	// batch's start, so the last request cannot arrive sooner than this
	// after it (less the tenth of a second's worth each worker may lease,
	// for safety). Measured from the start, not from the first arrival, no
	// delay of any request can shorten it.
	span := arr[len(arr)-1].Sub(began)
	minSpan := time.Duration(float64(n-burst-3*rate/10) / rate * float64(time.Second))
	t.Logf("%d requests in %v from the start, %v from the first (limit %d/s), results per worker %v",
		n, span.Round(time.Millisecond), arr[len(arr)-1].Sub(arr[0]).Round(time.Millisecond), rate, workers)
	if span < minSpan {
		t.Fatalf("%d requests arrived within %v of the batch's start; at %d/s they need at least %v", n, span, rate, minSpan)
	}
}

// Issue 8: one worker process with JETPOST_MAX_INFLIGHT=200 against the
// issue's target (429 above 30 concurrent requests, 50 ms): the worker
// learns a limit (its metric) below the ceiling, every job succeeds, and
// every request the target answered is an attempt some result counts.
// How rare the 429s are is bench/cmd/limitbench's figure, and how close the limit
// comes to 30 pkg/hostlimit's tests (on an injected clock): on a loaded
// machine requests admitted before a cut reach the host late, and a worker
// too starved to fill its limit lets it grow untested, so neither is
// asserted here. The attempt budget is ample for the same reason: at a 15 %
// share of 429s, 5 tries would fail one job in ten runs.
func TestAdaptiveConcurrencyWorkerProcess(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{Capacity: 30, Latency: 50 * time.Millisecond})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	const ceiling = 200
	w := start(t, "worker", workerEnv(ns.ClientURL(), fmt.Sprintf("JETPOST_MAX_INFLIGHT=%d", ceiling), "JETPOST_MAX_ATTEMPTS=100",
		"JETPOST_HTTP_ADDR=127.0.0.1:0"))
	base := "http://" + opsAddr(t, w)
	w.waitLine("consuming jobs")
	const n = 1500
	out := filepath.Join(t.TempDir(), "results.jsonl")
	if code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "adaptive", "--wait", "--out", out, writeJobs(t, n, srv.URL)); code != 0 {
		t.Fatalf("enqueue exit %d: %s", code, stderr)
	}
	attempts := 0
	for id, r := range readResults(t, out) {
		if !r.OK {
			t.Fatalf("job %s failed: %s", id, r.Error)
		}
		attempts += r.Attempts
	}
	st := tg.Stats().ByStatus
	_, body := get(t, base+"/metrics")
	limit := metric(body, fmt.Sprintf(`jetpost_host_concurrency_limit{host=%q}`, srv.Listener.Addr().String()))
	t.Logf("200: %d, 429: %d (%.2f%%; a fixed pool of 200 sees about 86%%), peak at target %d, limit now %v",
		st[200], st[429], 100*float64(st[429])/float64(st[200]+st[429]), tg.Stats().MaxInFlight, limit)
	if st[200] != n || int64(attempts) != st[200]+st[429] {
		t.Fatalf("target answered %d × 200 and %d × 429 for %d jobs whose results count %d attempts", st[200], st[429], n, attempts)
	}
	if limit < 1 || limit >= ceiling {
		t.Fatalf("learned limit %v: want one between 1 and the ceiling %d", limit, ceiling)
	}
}
