package hostlimit

import (
	"container/heap"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/sender"
)

// The adaptive limit is tested by simulation: a Limiter on a fake clock in
// front of a modelled host, an endless backlog that fills every slot the
// limiter allows, and simulated time. No goroutines, no sleeps: the same
// run every time, in milliseconds of real time.

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

// hostModel answers a request arriving at now: the status and when the
// answer arrives. done is called when that answer arrives.
type hostModel interface {
	arrive(now time.Time) (status int, latency time.Duration, timedOut bool)
	done(status int)
}

// refuseAbove answers 429 at once above capacity concurrent requests and
// 200 after latency otherwise: a rate-limited API.
type refuseAbove struct {
	capacity int
	latency  time.Duration
	busy     int
}

func (h *refuseAbove) arrive(time.Time) (int, time.Duration, bool) {
	if h.busy >= h.capacity {
		return 429, time.Millisecond, false
	}
	h.busy++
	return 200, h.latency, false
}

func (h *refuseAbove) done(status int) {
	if status == 200 {
		h.busy--
	}
}

// queueing serves capacity requests at a time, each for service; the rest
// wait in line: latency rises with load and nothing is refused.
type queueing struct {
	service time.Duration
	free    []time.Time // when each server is next free
}

func (h *queueing) arrive(now time.Time) (int, time.Duration, bool) {
	best := 0
	for i, f := range h.free {
		if f.Before(h.free[best]) {
			best = i
		}
	}
	start := now
	if h.free[best].After(now) {
		start = h.free[best]
	}
	h.free[best] = start.Add(h.service)
	return 200, h.free[best].Sub(now), false
}

func (h *queueing) done(int) {}

type pending struct {
	at       time.Time
	status   int
	latency  time.Duration
	timedOut bool
	release  *sender.Permit
}

type pendingHeap []pending

func (p pendingHeap) Len() int           { return len(p) }
func (p pendingHeap) Less(i, j int) bool { return p[i].at.Before(p[j].at) }
func (p pendingHeap) Swap(i, j int)      { p[i], p[j] = p[j], p[i] }
func (p *pendingHeap) Push(x any)        { *p = append(*p, x.(pending)) }
func (p *pendingHeap) Pop() any {
	old := *p
	x := old[len(old)-1]
	*p = old[:len(old)-1]
	return x
}

type simResult struct {
	byStatus map[int]int
	refused  int
	limits   []int // the host's limit after each answer
}

// simulate runs an endless backlog of jobs for host through l for d of
// simulated time: whenever an answer arrives, as many new requests start as
// the limiter admits.
func simulate(t *testing.T, l *Limiter, clock *fakeClock, h hostModel, d time.Duration) simResult {
	t.Helper()
	const host = "api.example.com:443"
	res := simResult{byStatus: map[int]int{}}
	var q pendingHeap
	end := clock.now().Add(d)
	fill := func() {
		for {
			release, err := l.Admit(context.Background(), sender.AdmitRequest{Host: host})
			if err != nil {
				var na *sender.NotAdmittedError
				if !errors.As(err, &na) || na.Wait <= 0 {
					t.Fatalf("refusal %v: want a NotAdmittedError with a wait", err)
				}
				res.refused++
				return
			}
			status, lat, to := h.arrive(clock.now())
			heap.Push(&q, pending{at: clock.now().Add(lat), status: status, latency: lat, timedOut: to, release: release})
		}
	}
	fill()
	for q.Len() > 0 {
		p := heap.Pop(&q).(pending)
		if p.at.After(end) {
			break
		}
		clock.t = p.at
		h.done(p.status)
		st := p.status
		if p.timedOut {
			st = 0
		}
		p.release.Done(sender.Feedback{Sent: true, Status: st, Latency: p.latency, TimedOut: p.timedOut})
		res.byStatus[p.status]++
		res.limits = append(res.limits, hostLimit(l, host))
		fill()
	}
	return res
}

func hostLimit(l *Limiter, host string) int {
	for _, s := range l.Snapshot() {
		if s.Host == host {
			return s.Limit
		}
	}
	return 0
}

func TestAdaptiveFindsCapacityOfA429Host(t *testing.T) {
	// The scenario: 429 above 30 concurrent requests, 50 ms each,
	// MAX_INFLIGHT 200. Capacity is 30 / 0.05 s = 600 requests per second.
	clock := newClock()
	l, err := New(Config{MaxInflight: 200, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	const d = 60 * time.Second
	res := simulate(t, l, clock, &refuseAbove{capacity: 30, latency: 50 * time.Millisecond}, d)
	ok, refused := res.byStatus[200], res.byStatus[429]
	rate := float64(ok) / d.Seconds()
	share := float64(refused) / float64(ok+refused)
	t.Logf("ok %d (%.0f/s), 429 %d (%.2f%%), final limit %d", ok, rate, refused, 100*share, res.limits[len(res.limits)-1])
	if rate < 0.9*600 {
		t.Errorf("throughput %.0f/s, want at least 540/s", rate)
	}
	if share > 0.02 {
		t.Errorf("%.2f%% of requests answered 429, want at most 2%%", 100*share)
	}
	for i, lim := range res.limits[len(res.limits)/10:] {
		if lim > 40 {
			t.Fatalf("limit %d after answer %d: it should stay near the capacity of 30", lim, i)
		}
	}
}

func TestAdaptiveBacksOffWhenLatencyRises(t *testing.T) {
	// A host that queues instead of refusing: 30 served at a time, 50 ms
	// each. Without a latency signal the limit would climb to 200 and
	// every request would wait in line ~330 ms.
	clock := newClock()
	l, err := New(Config{MaxInflight: 200, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	h := &queueing{service: 50 * time.Millisecond, free: make([]time.Time, 30)}
	const d = 60 * time.Second
	res := simulate(t, l, clock, h, d)
	rate := float64(res.byStatus[200]) / d.Seconds()
	maxLate := 0
	for _, lim := range res.limits[len(res.limits)/2:] {
		maxLate = max(maxLate, lim)
	}
	t.Logf("%.0f/s, highest limit in the second half %d", rate, maxLate)
	if rate < 0.9*600 {
		t.Errorf("throughput %.0f/s, want at least 540/s", rate)
	}
	if maxLate > 2*30+5 {
		t.Errorf("limit reached %d: queueing (latency above twice the baseline) should hold it near 2×30", maxLate)
	}
}

func TestAdaptiveShrinksOnTimeoutsAndStaysWithinBounds(t *testing.T) {
	clock := newClock()
	l, err := New(Config{MaxInflight: 50, InitialLimit: 40, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	const host = "slow.example:443"
	var releases []*sender.Permit
	for {
		rel, err := l.Admit(context.Background(), sender.AdmitRequest{Host: host})
		if err != nil {
			break
		}
		releases = append(releases, rel)
	}
	if len(releases) != 40 {
		t.Fatalf("admitted %d, want the initial limit 40", len(releases))
	}
	// All time out together: one cut, not forty (they were sent under the
	// same limit).
	clock.advance(30 * time.Second)
	for _, rel := range releases {
		rel.Done(sender.Feedback{Sent: true, TimedOut: true, Latency: 30 * time.Second})
	}
	if got := hostLimit(l, host); got != 36 {
		t.Fatalf("limit %d after one round of timeouts, want 40×0.9 = 36", got)
	}
	// Round after round of timeouts takes it down to 1, never below.
	for range 100 {
		rel, err := l.Admit(context.Background(), sender.AdmitRequest{Host: host})
		if err != nil {
			t.Fatal(err)
		}
		clock.advance(time.Second)
		rel.Done(sender.Feedback{Sent: true, TimedOut: true})
	}
	if got := hostLimit(l, host); got != 1 {
		t.Fatalf("limit %d, want 1", got)
	}
	// Feedback that says nothing about the host moves nothing.
	rel, _ := l.Admit(context.Background(), sender.AdmitRequest{Host: host})
	rel.Done(sender.Feedback{Sent: true, Canceled: true, TimedOut: true})
	rel, _ = l.Admit(context.Background(), sender.AdmitRequest{Host: host})
	rel.Done(sender.Feedback{Sent: false})
	if got := hostLimit(l, host); got != 1 {
		t.Fatalf("limit %d after neutral feedback, want 1", got)
	}
}

func TestAdaptiveDoesNotGrowWhenNotTested(t *testing.T) {
	// One request at a time never tests a limit of 10: it must not grow.
	clock := newClock()
	l, _ := New(Config{MaxInflight: 100, Now: clock.now})
	const host = "idle.example:443"
	for range 1000 {
		rel, err := l.Admit(context.Background(), sender.AdmitRequest{Host: host})
		if err != nil {
			t.Fatal(err)
		}
		clock.advance(10 * time.Millisecond)
		rel.Done(sender.Feedback{Sent: true, Status: 200, Latency: 10 * time.Millisecond})
	}
	if got := hostLimit(l, host); got != l.cfg.InitialLimit || got != 20 {
		t.Fatalf("limit %d, want the initial %d", got, l.cfg.InitialLimit)
	}
}

// noisyFast answers in 0.3 to 1.5 ms, with stretches of 5 ms now and
// then: a fast host seen from a busy machine (garbage collection, a busy
// scheduler).
type noisyFast struct{ n int }

func (h *noisyFast) arrive(time.Time) (int, time.Duration, bool) {
	h.n++
	lat := 300*time.Microsecond + time.Duration(h.n*7919%1200)*time.Microsecond
	if h.n%2000 < 100 {
		lat = 5 * time.Millisecond
	}
	return 200, lat, false
}

func TestAdaptiveIgnoresSubMillisecondNoise(t *testing.T) {
	// A host answering in well under a millisecond is "five times slower"
	// during a hiccup of the machine; that is not queueing, and must not
	// cut its limit. The worker offers only 8 requests at a time, so the
	// limit (20) is never tested and, once cut by noise, cannot grow back.
	clock := newClock()
	l, _ := New(Config{MaxInflight: 256, Now: clock.now})
	const host, offered = "fast.example:443", 8
	h := &noisyFast{}
	var q pendingHeap
	admitOne := func() {
		rel, err := l.Admit(context.Background(), sender.AdmitRequest{Host: host})
		if err != nil {
			t.Fatalf("refused below the limit: %v", err)
		}
		_, lat, _ := h.arrive(clock.now())
		heap.Push(&q, pending{at: clock.now().Add(lat), status: 200, latency: lat, release: rel})
	}
	for range offered {
		admitOne()
	}
	for range 200000 {
		p := heap.Pop(&q).(pending)
		clock.t = p.at
		p.release.Done(sender.Feedback{Sent: true, Status: 200, Latency: p.latency})
		if lim := hostLimit(l, host); lim < l.cfg.InitialLimit {
			t.Fatalf("limit fell to %d (from %d) on latency noise alone", lim, l.cfg.InitialLimit)
		}
		admitOne()
	}
}
