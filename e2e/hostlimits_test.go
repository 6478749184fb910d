package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
)

// limitedTarget records when each request arrives, and with capacity > 0
// answers 429 at once above capacity concurrent requests, as an API that
// limits concurrency does; the others take latency.
type limitedTarget struct {
	capacity int64
	latency  time.Duration

	inflight, peak atomic.Int64
	mu             sync.Mutex
	arrivals       []time.Time
	status         map[int]int
}

func (lt *limitedTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	n := lt.inflight.Add(1)
	defer lt.inflight.Add(-1)
	for p := lt.peak.Load(); n > p && !lt.peak.CompareAndSwap(p, n); p = lt.peak.Load() {
	}
	status := http.StatusOK
	if lt.capacity > 0 && n > lt.capacity {
		status = http.StatusTooManyRequests
	} else if lt.latency > 0 {
		select {
		case <-time.After(lt.latency):
		case <-r.Context().Done():
		}
	}
	lt.mu.Lock()
	lt.arrivals = append(lt.arrivals, now)
	if lt.status == nil {
		lt.status = map[int]int{}
	}
	lt.status[status]++
	lt.mu.Unlock()
	w.WriteHeader(status)
}

func (lt *limitedTarget) snapshot() ([]time.Time, map[int]int) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	arr := slices.Clone(lt.arrivals)
	slices.SortFunc(arr, func(a, b time.Time) int { return a.Compare(b) })
	st := map[int]int{}
	for k, v := range lt.status {
		st[k] = v
	}
	return arr, st
}

// Issue 8: three worker processes share one rate limit through NATS. The
// assertion is a lower bound on how long the target's arrivals take, which
// a loaded machine can only lengthen: without coordination, three workers
// would each send at the full rate and finish in a third of it.
func TestFleetRateLimitAcrossWorkerProcesses(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := &limitedTarget{}
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
	arr, _ := tg.snapshot()
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
	tg := &limitedTarget{capacity: 30, latency: 50 * time.Millisecond}
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
	_, st := tg.snapshot()
	share := float64(st[429]) / float64(st[200]+st[429])
	_, body := get(t, base+"/metrics")
	limit := metric(body, fmt.Sprintf(`jetpost_host_concurrency_limit{host=%q}`, srv.Listener.Addr().String()))
	t.Logf("200: %d, 429: %d (%.2f%%), peak at target %d, limit now %v", st[200], st[429], 100*share, tg.peak.Load(), limit)
	if st[200] != n {
		t.Fatalf("%d successful requests for %d jobs", st[200], n)
	}
	if share > 0.10 {
		t.Fatalf("%.1f%% of requests were answered 429", 100*share)
	}
	if limit < 1 || limit > 45 {
		t.Fatalf("learned limit %v: the host takes 30", limit)
	}
}
