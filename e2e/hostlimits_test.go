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
	out := filepath.Join(t.TempDir(), "results.jsonl")
	if code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "rated", "--wait", "--out", out, writeJobs(t, n, srv.URL)); code != 0 {
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
	// n requests at rate/s with a burst, and each worker leasing up to a
	// tenth of a second's worth, cannot arrive faster than this; half a
	// second of slack for the first request being late.
	span := arr[len(arr)-1].Sub(arr[0])
	minSpan := time.Duration(float64(n-burst-3*rate/10)/rate*float64(time.Second)) - 500*time.Millisecond
	t.Logf("%d requests in %v (%.1f/s, limit %d/s), results per worker %v", n, span.Round(time.Millisecond), float64(n-1)/span.Seconds(), rate, workers)
	if span < minSpan {
		t.Fatalf("%d requests arrived within %v; at %d/s they need at least %v", n, span, rate, minSpan)
	}
}

// Issue 8: one worker process with JETPOST_MAX_INFLIGHT=200 against the
// issue's target (429 above 30 concurrent requests, 50 ms). Every job
// succeeds, 429s stay rare, and the limit the worker learned (its metric)
// is near the host's capacity, not the ceiling. The bounds are generous: a
// loaded machine only makes the limit more careful.
func TestAdaptiveConcurrencyWorkerProcess(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{Capacity: 30, Latency: 50 * time.Millisecond})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	w := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_MAX_INFLIGHT=200", "JETPOST_HTTP_ADDR=127.0.0.1:0"))
	base := "http://" + opsAddr(t, w)
	w.waitLine("consuming jobs")
	const n = 1500
	out := filepath.Join(t.TempDir(), "results.jsonl")
	if code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "adaptive", "--wait", "--out", out, writeJobs(t, n, srv.URL)); code != 0 {
		t.Fatalf("enqueue exit %d: %s", code, stderr)
	}
	for id, r := range readResults(t, out) {
		if !r.OK {
			t.Fatalf("job %s failed: %s", id, r.Error)
		}
	}
	st := tg.Stats().ByStatus
	share := float64(st[429]) / float64(st[200]+st[429])
	_, body := get(t, base+"/metrics")
	limit := metric(body, fmt.Sprintf(`jetpost_host_concurrency_limit{host=%q}`, srv.Listener.Addr().String()))
	t.Logf("200: %d, 429: %d (%.2f%%), peak at target %d, limit now %v", st[200], st[429], 100*share, tg.Stats().MaxInFlight, limit)
	if st[200] != n {
		t.Fatalf("%d successful requests for %d jobs", st[200], n)
	}
	// A bound a loaded machine cannot break, as in the fleetrate test of
	// the same target: the ≤ 2 % figure is cmd/limitbench's, and a fixed
	// pool of 200 is answered 429 about 86 % of the time.
	if share > 1.0/3 {
		t.Fatalf("%.1f%% of requests were answered 429", 100*share)
	}
	if limit < 1 || limit > 45 {
		t.Fatalf("learned limit %v: the host takes 30", limit)
	}
}
