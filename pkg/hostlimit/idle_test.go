package hostlimit

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/sender"
)

// A batch that arrives after an idle gap must run as one that arrives while
// the worker is busy: nothing the limiter keeps may read the gap as a
// stall, a pace or a place in a line. The batches are simulated on the fake
// clock (jobs refused come back after the wait they were told, as JetStream
// redelivers them), so the comparisons are exact and need no sleeps.

// batchEvent is a job coming back to Admit (release nil) or a request's
// answer arriving.
type batchEvent struct {
	at      time.Time
	seq     int // ties: first scheduled, first run
	host    string
	release *sender.Permit
}

type batchQueue []batchEvent

func (q batchQueue) Len() int { return len(q) }
func (q batchQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q batchQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *batchQueue) Push(x any)   { *q = append(*q, x.(batchEvent)) }
func (q *batchQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

type batchRun struct {
	took    time.Duration // from the batch's arrival to its last answer
	refused int
	maxWait time.Duration // the longest wait a refusal told
}

// runBatch sends jobs requests, spread over hosts, through l against hosts
// answering 200 after lat, all arriving at once, and runs until every one
// was answered.
func runBatch(t *testing.T, l *Limiter, clock *fakeClock, hosts []string, jobs int, lat time.Duration) batchRun {
	t.Helper()
	var q batchQueue
	seq := 0
	push := func(e batchEvent) {
		seq++
		e.seq = seq
		heap.Push(&q, e)
	}
	start := clock.now()
	for i := range jobs {
		push(batchEvent{at: start, host: hosts[i%len(hosts)]})
	}
	var run batchRun
	for answered := 0; answered < jobs; {
		if q.Len() == 0 || run.refused > 100*jobs {
			t.Fatalf("batch stuck: %d of %d answered, %d refusals", answered, jobs, run.refused)
		}
		e := heap.Pop(&q).(batchEvent)
		clock.t = e.at
		if e.release != nil {
			e.release.Done(sender.Feedback{Sent: true, Status: 200, Latency: lat})
			answered++
			run.took = clock.now().Sub(start)
			continue
		}
		rel, err := l.Admit(context.Background(), sender.AdmitRequest{Host: e.host})
		var na *sender.NotAdmittedError
		switch {
		case err == nil:
			push(batchEvent{at: clock.now().Add(lat), host: e.host, release: rel})
		case errors.As(err, &na) && na.Wait > 0:
			run.refused++
			run.maxWait = max(run.maxWait, na.Wait)
			push(batchEvent{at: clock.now().Add(na.Wait), host: e.host})
		default:
			t.Fatalf("Admit: %v", err)
		}
	}
	return run
}

// seeded makes the limiter's jitter the same in every run.
func seeded(t *testing.T, cfg Config) *Limiter {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.rnd = rand.New(rand.NewPCG(1, 2))
	return l
}

var idleGaps = []time.Duration{20 * time.Second, 10 * time.Minute, 5 * time.Hour}

func hostNames(n int) []string {
	var hs []string
	for i := range n {
		hs = append(hs, fmt.Sprintf("h%d.example:443", i))
	}
	return hs
}

// twoBatches runs a batch, waits gap, runs another and returns both.
func twoBatches(t *testing.T, cfg Config, hosts []string, jobs int, lat, gap time.Duration) (first, second batchRun) {
	t.Helper()
	clock := newClock()
	cfg.Now = clock.now
	l := seeded(t, cfg)
	first = runBatch(t, l, clock, hosts, jobs, lat)
	clock.advance(gap)
	return first, runBatch(t, l, clock, hosts, jobs, lat)
}

// The reproduction, simulated: 600 jobs, 50 ms, MAX_INFLIGHT 40. The
// gap must not be read as the host's latency, which would space refused
// jobs by gap ÷ limit.
func TestBatchAfterAnIdleGapRunsAsABusyOne(t *testing.T) {
	const jobs, lat = 600, 50 * time.Millisecond
	for _, fixed := range []bool{false, true} {
		for _, nHosts := range []int{1, 4} {
			cfg := Config{MaxInflight: 40, Fixed: fixed}
			hosts := hostNames(nHosts)
			_, busy := twoBatches(t, cfg, hosts, jobs, lat, 0)
			for _, gap := range idleGaps {
				first, second := twoBatches(t, cfg, hosts, jobs, lat, gap)
				name := fmt.Sprintf("fixed=%v hosts=%d gap=%v", fixed, nHosts, gap)
				t.Logf("%s: first %v (%d refused), busy %v, after the gap %v (%d refused, longest wait %v)",
					name, first.took, first.refused, busy.took, second.took, second.refused, second.maxWait)
				// Past IdleAfter a host is forgotten: its batch runs as the
				// first one did, on a fresh host.
				took, longest := max(first.took, busy.took), max(first.maxWait, busy.maxWait)
				if second.took > took+took/10 || second.maxWait > longest+longest/10 {
					t.Errorf("%s: batch took %v (longest wait %v), want at most about %v (longest %v) as without the gap",
						name, second.took, second.maxWait, took, longest)
				}
			}
		}
	}
}

// A request that finds the host's slots full may wait in Admit for one
// while the host answers; the first request of a batch after an idle gap
// does not make the host "not answering".
func TestWaitingAfterAnIdleGapAsWhenBusy(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		for _, gap := range append([]time.Duration{0}, idleGaps...) {
			clock := newClock()
			l := seeded(t, Config{MaxInflight: 4, Fixed: fixed, Now: clock.now})
			a := sender.AdmitRequest{Host: "a.example:443"}
			roundTrips(t, l, clock, a, 30, 50*time.Millisecond)
			l.cfg.MaxWaiting = 8 // only now: roundTrips runs until a refusal
			clock.advance(gap)
			// The new batch's first requests fill the host's slots (past
			// IdleAfter, those of the host learned afresh).
			if _, na := admit(t, l, a); na != nil {
				t.Fatal(na)
			}
			for range hostLimit(l, a.Host) - 1 {
				if _, na := admit(t, l, a); na != nil {
					t.Fatal(na)
				}
			}
			l.mu.Lock()
			h := l.hosts[a.Host]
			wait, ok := l.mayWait(h, clock.now())
			l.mu.Unlock()
			if !ok || wait <= 0 {
				t.Errorf("fixed=%v gap=%v: a request may not wait for a slot of a host that answered 50 ms ago", fixed, gap)
			}
		}
	}
}

// A host that hangs is still noticed: the clock starts when it went busy.
func TestStallCountsFromWhenTheHostWentBusy(t *testing.T) {
	clock := newClock()
	l := seeded(t, Config{MaxInflight: 2, InitialLimit: 2, Now: clock.now})
	a := sender.AdmitRequest{Host: "a.example:443"}
	roundTrips(t, l, clock, a, 30, 50*time.Millisecond)
	clock.advance(5 * time.Minute) // idle, but not yet forgotten
	for range hostLimit(l, a.Host) {
		admit(t, l, a)
	}
	_, na := admit(t, l, a)
	if na == nil || na.Wait > time.Second {
		t.Fatalf("refusal %v just after 5 idle minutes: want a short wait", na)
	}
	clock.advance(20 * time.Second) // no answer for 20 s since it went busy
	_, na = admit(t, l, a)
	if na == nil || na.Wait < 5*time.Second {
		t.Fatalf("refusal %v after 20 s without an answer: want a wait of the order of the hang", na)
	}
	l.cfg.MaxWaiting = 8 // only now: roundTrips and the refusals above would wait
	l.mu.Lock()
	_, ok := l.mayWait(l.hosts[a.Host], clock.now())
	l.mu.Unlock()
	if ok {
		t.Fatal("a request may wait for a host that has not answered for 20 s")
	}
}

// A rate-limited host: the tokens (GCRA) and the lines of refused jobs
// (the shared schedule, its blocks, the local cursor) are left by a long
// batch as they would be by a busy stream. A line longer than MaxDefer
// must not leave places far in the future that no job would take, parking
// the next batch's refused jobs for MaxDefer behind them.
func TestRateLimitedBatchAfterAnIdleGap(t *testing.T) {
	const jobs, lat = 600, 50 * time.Millisecond
	rules, err := ParseRules("*.example=50/s")
	if err != nil {
		t.Fatal(err)
	}
	for _, fixed := range []bool{false, true} {
		for _, nHosts := range []int{1, 4} {
			cfg := Config{MaxInflight: 40, Fixed: fixed, Rates: rules, MaxDefer: 5 * time.Second}
			hosts := hostNames(nHosts)
			// 600 jobs at 50/s: 12 s of tokens over the hosts.
			want := time.Duration(jobs/nHosts) * time.Second / 50
			for _, gap := range append([]time.Duration{0}, idleGaps...) {
				first, second := twoBatches(t, cfg, hosts, jobs, lat, gap)
				name := fmt.Sprintf("fixed=%v hosts=%d gap=%v", fixed, nHosts, gap)
				t.Logf("%s: first %v (%d refused), after the gap %v (%d refused, longest wait %v)",
					name, first.took, first.refused, second.took, second.refused, second.maxWait)
				for i, b := range []batchRun{first, second} {
					if b.took > want+want/10 {
						t.Errorf("%s: batch %d took %v, want about %v (the rate)", name, i+1, b.took, want)
					}
				}
			}
		}
	}
}

// An idle worker forgets idle hosts too: the board's snapshots sweep, so
// what enqueue status shows and what the worker keeps do not wait for the
// next batch.
func TestIdleWorkerForgetsIdleHosts(t *testing.T) {
	clock := newClock()
	l := seeded(t, Config{MaxInflight: 4, Now: clock.now})
	for _, h := range hostNames(3) {
		rel, na := admit(t, l, sender.AdmitRequest{Host: h})
		if na != nil {
			t.Fatal(na)
		}
		rel.Done(sender.Feedback{Sent: true, Status: 200, Latency: time.Millisecond})
	}
	if n := len(l.Snapshot()); n != 3 {
		t.Fatalf("%d hosts, want 3", n)
	}
	clock.advance(DefaultIdleAfter + time.Minute)
	if st := l.Snapshot(); len(st) != 0 {
		t.Fatalf("after %v idle the snapshot still lists %+v", DefaultIdleAfter+time.Minute, st)
	}
}
