package hostlimit

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/sender"
)

// batchSim runs one batch through workers that park refused jobs as the
// worker does on JetStream: a refused job comes back after its wait, to
// the next worker in turn (whichever pulls it), and a job answered 429 is
// retried after its pace (or a second). Time is simulated.
type batchSim struct {
	t      *testing.T
	clock  *fakeClock
	host   *refuseAbove
	ls     []*Limiter
	q      simHeap
	seq    int
	turn   int
	starve func(w int, now time.Time) time.Duration // how late worker w learns of an answer
	ok     int
	last   time.Time
	parked int // refusals and paced retries
}

type simEvent struct {
	at     time.Time
	seq    int
	w      int
	permit *sender.Permit // nil: a job arrives at worker w
	status int
	lat    time.Duration
	freed  bool // the host's side of an answer: its slot frees
}

type simHeap []simEvent

func (h simHeap) Len() int { return len(h) }
func (h simHeap) Less(i, j int) bool {
	return h[i].at.Before(h[j].at) || h[i].at.Equal(h[j].at) && h[i].seq < h[j].seq
}
func (h simHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *simHeap) Push(x any)   { *h = append(*h, x.(simEvent)) }
func (h *simHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

func (s *batchSim) push(e simEvent) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.q, e)
}

// comeBack parks a job until at; it comes back to the next worker in turn.
func (s *batchSim) comeBack(at time.Time) {
	s.parked++
	s.turn = (s.turn + 1) % len(s.ls)
	s.push(simEvent{at: at, w: s.turn})
}

func (s *batchSim) arrive(w int) {
	now := s.clock.now()
	permit, err := s.ls[w].Admit(context.Background(), sender.AdmitRequest{Host: fleetHost})
	if err != nil {
		var na *sender.NotAdmittedError
		if !errors.As(err, &na) || na.Wait <= 0 {
			s.t.Fatalf("refusal %v: want a NotAdmittedError with a wait", err)
		}
		s.comeBack(now.Add(na.Wait))
		return
	}
	status, lat, _ := s.host.arrive(now)
	s.push(simEvent{at: now.Add(lat), freed: true, status: status})
	late := s.starve(w, now)
	s.push(simEvent{at: now.Add(lat + late), w: w, permit: permit, status: status, lat: lat + late})
}

func (s *batchSim) answer(e simEvent) {
	now := s.clock.now()
	pace := e.permit.Done(sender.Feedback{Sent: true, Status: e.status, Latency: e.lat,
		WantPace: e.status == http.StatusTooManyRequests})
	if e.status == http.StatusOK {
		s.ok++
		s.last = now
		return
	}
	if pace <= 0 {
		pace = time.Second // the worker's backoff
	}
	s.comeBack(now.Add(pace))
}

// run publishes n jobs at once, spread over the workers, and runs until
// every one got a 200. It returns the batch's throughput, jobs per second.
func (s *batchSim) run(n int) float64 {
	start := s.clock.now()
	for i := range n {
		s.push(simEvent{at: start, w: i % len(s.ls)})
	}
	for s.ok < n {
		e := heap.Pop(&s.q).(simEvent)
		s.clock.t = e.at
		switch {
		case e.freed:
			s.host.done(e.status)
		case e.permit != nil:
			s.answer(e)
		default:
			s.arrive(e.w)
		}
	}
	return float64(n) / s.last.Sub(start).Seconds()
}

func newBatchSim(t *testing.T, workers int, starve func(int, time.Time) time.Duration) *batchSim {
	clock := newClock()
	s := &batchSim{t: t, clock: clock, host: &refuseAbove{capacity: 30, latency: 50 * time.Millisecond}, starve: starve}
	shared := &MemBuckets{}
	for range workers {
		l, err := New(Config{MaxInflight: 200, Buckets: shared, Now: clock.now, Peers: func() int { return workers }})
		if err != nil {
			t.Fatal(err)
		}
		l.rnd = rand.New(rand.NewPCG(1, uint64(len(s.ls)))) // the jitter of unknown latencies
		s.ls = append(s.ls, l)
	}
	return s
}

// TestABatchEndsWithTheFleet: issue 17's capped API (429 above 30
// concurrent requests, 50 ms each, capacity 600/s) and a batch of 12,000
// jobs, parked and handed back as JetStream does, with one worker and with
// three. In the "starved" runs one worker of three is starved of CPU for
// two seconds: it learns of each answer 200 ms late, reads that as the
// host queueing, and cuts its limit down. Its refused jobs must not be
// parked behind what it saw then: the line of a worker paced on its own
// limit (and on the stall) held a fifth of the batch back for a minute
// while the others sat idle.
func TestABatchEndsWithTheFleet(t *testing.T) {
	const n = 12000
	// Starved, the worker runs once every 250 ms: it learns of each
	// answer at the next of those moments.
	starved := func(w int, sent time.Time) time.Duration {
		since := sent.Add(50 * time.Millisecond).Sub(newClock().now())
		if w != 0 || since < 3*time.Second || since >= 5*time.Second {
			return 0
		}
		const slice = 250 * time.Millisecond
		return (slice - since%slice) % slice
	}
	fine := func(int, time.Time) time.Duration { return 0 }
	for _, c := range []struct {
		workers int
		starve  func(int, time.Time) time.Duration
		name    string
	}{{1, fine, "fine"}, {3, fine, "fine"}, {3, starved, "starved"}} {
		t.Run(fmt.Sprintf("%d workers, %s", c.workers, c.name), func(t *testing.T) {
			s := newBatchSim(t, c.workers, c.starve)
			rate := s.run(n)
			t.Logf("%.0f jobs/s (%.2f of 600), %d parkings for %d jobs", rate, rate/600, s.parked, n)
			// Three workers without the waiting buffer (MaxWaiting 0) get
			// 0.90 of the capacity here; their lines paced each on its own
			// limit got 0.87, and 0.82 with one of them starved.
			if want := map[int]float64{1: 0.95, 3: 0.88}[c.workers]; rate < want*600 {
				t.Errorf("throughput %.0f jobs/s, want at least %.0f", rate, want*600)
			}
			// Every job is parked about four times here: refusals in the
			// first round trips, before the host's pace is known, come
			// back at once and are parked again.
			if s.parked > 5*n {
				t.Errorf("%d parkings for %d jobs, want at most five each", s.parked, n)
			}
		})
	}
}

// TestAShortStallDoesNotStretchTheLine: a host that owes an answer for
// less than a second (and twice its latency) keeps its line's pace; one
// that owes it longer slows the line down.
func TestAShortStallDoesNotStretchTheLine(t *testing.T) {
	clock := newClock()
	a := sender.AdmitRequest{Host: fleetHost}
	l, _ := New(Config{MaxInflight: 4, Fixed: true, Now: clock.now})
	roundTrips(t, l, clock, a, 25, 40*time.Millisecond)
	admitN(t, l, a, 4)
	clock.advance(300 * time.Millisecond) // starved, or the host slow for a moment
	step := lineSpacing(40*time.Millisecond, 4)
	if _, na := admit(t, l, a); na == nil || na.Wait != step {
		t.Fatalf("refusal after a 300 ms stall: %v, want a wait of %v", na, step)
	}
	clock.advance(2 * time.Second)
	if _, na := admit(t, l, a); na == nil || na.Wait != lineSpacing(2300*time.Millisecond, 4) {
		t.Fatalf("refusal after a 2.3 s stall: %v, want a wait of %v", na, lineSpacing(2300*time.Millisecond, 4))
	}
}

// TestALineKeepsThePaceOfTheLimitsPeak: a limit cut far down by a run of
// slow answers (a worker starved of CPU reads them so) does not slow its
// line down: the line is paced on the highest limit of the last seconds.
func TestALineKeepsThePaceOfTheLimitsPeak(t *testing.T) {
	clock := newClock()
	a := sender.AdmitRequest{Host: fleetHost}
	l, _ := New(Config{MaxInflight: 40, InitialLimit: 10, Now: clock.now})
	roundTrips(t, l, clock, a, 5, 40*time.Millisecond) // slow start to the ceiling
	rel, _ := admit(t, l, a)
	clock.advance(time.Millisecond)
	rel.Done(sender.Feedback{Sent: true, Status: 429, Latency: time.Millisecond}) // ends slow start: 36
	clock.advance(40 * time.Millisecond)
	roundTrips(t, l, clock, a, 10, 40*time.Millisecond) // the peak: 36 or more
	for range 40 {
		roundTrips(t, l, clock, a, 1, 400*time.Millisecond) // slow answers: a cut per round trip
	}
	if got := hostLimit(l, fleetHost); got > 2 {
		t.Fatalf("limit %d after 40 slow round trips, want it cut to 1 or 2", got)
	}
	admitN(t, l, a, hostLimit(l, fleetHost))
	if _, na := admit(t, l, a); na == nil || na.Wait > lineSpacing(40*time.Millisecond, 36) {
		t.Fatalf("refusal %v: want a line paced on the peak (36 or more), at most %v apart", na, lineSpacing(40*time.Millisecond, 36))
	}
}
