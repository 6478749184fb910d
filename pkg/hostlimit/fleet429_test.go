package hostlimit

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

// What a capped API's 429 carries, as the sender reports it to the
// limiter: without Retry-After the sender asks the permit for the host's
// pace (Feedback.WantPace); with one, in seconds or as an HTTP date, the
// retry waits what the host asked and the limiter is not asked.
var retryAfterKinds = []struct {
	name     string
	wantPace bool
}{{"none", true}, {"seconds", false}, {"date", false}}

// fleetSim is simulate for several workers, each with its own Limiter and
// an endless backlog, sharing one host: whenever an answer arrives, each
// worker starts as many requests as its limiter admits (jobs keep coming
// back to every worker).
type fleetSim struct {
	t        *testing.T
	clock    *fakeClock
	host     hostModel
	wantPace bool
	ls       []*Limiter
	q        pendingHeap
	byStatus map[int]int
	limits   [][]int // each worker's limit after each of its answers
	owner    map[*sender.Permit]int
}

const fleetHost = "api.example.com:443"

func (s *fleetSim) fill(w int) {
	for {
		permit, err := s.ls[w].Admit(context.Background(), sender.AdmitRequest{Host: fleetHost})
		if err != nil {
			var na *sender.NotAdmittedError
			if !errors.As(err, &na) || na.Wait <= 0 {
				s.t.Fatalf("refusal %v: want a NotAdmittedError with a wait", err)
			}
			return
		}
		status, lat, _ := s.host.arrive(s.clock.now())
		heap.Push(&s.q, pending{at: s.clock.now().Add(lat), status: status, latency: lat, release: permit})
		s.owner[permit] = w
	}
}

func (s *fleetSim) run(d time.Duration) {
	for w := range s.ls {
		s.fill(w)
	}
	end := s.clock.now().Add(d)
	for s.q.Len() > 0 {
		p := heap.Pop(&s.q).(pending)
		if p.at.After(end) {
			return
		}
		s.clock.t = p.at
		s.host.done(p.status)
		w := s.owner[p.release]
		delete(s.owner, p.release)
		p.release.Done(sender.Feedback{Sent: true, Status: p.status, Latency: p.latency,
			WantPace: p.status == http.StatusTooManyRequests && s.wantPace})
		s.byStatus[p.status]++
		s.limits[w] = append(s.limits[w], hostLimit(s.ls[w], fleetHost))
		for i := range s.ls {
			s.fill((w + i) % len(s.ls)) // the worker that got the answer first
		}
	}
}

func runFleet(t *testing.T, workers int, wantPace bool, d time.Duration) *fleetSim {
	t.Helper()
	clock := newClock()
	s := &fleetSim{t: t, clock: clock, host: &refuseAbove{capacity: 30, latency: 50 * time.Millisecond},
		wantPace: wantPace, byStatus: map[int]int{}, limits: make([][]int, workers), owner: map[*sender.Permit]int{}}
	for range workers {
		l, err := New(Config{MaxInflight: 200, Now: clock.now})
		if err != nil {
			t.Fatal(err)
		}
		s.ls = append(s.ls, l)
	}
	s.run(d)
	return s
}

// TestA429TeachesTheLimitWithOrWithoutRetryAfter: issue 17's capped API
// (429 above 30 concurrent requests, 50 ms each, capacity 600/s) with one
// worker and with three sharing it, its 429s without Retry-After, with
// seconds and with an HTTP date. Every variant must get at least 0.9 of
// the capacity with at most 2% of requests answered 429, and a 429 must
// teach the limits the same whatever it carries.
func TestA429TeachesTheLimitWithOrWithoutRetryAfter(t *testing.T) {
	const d = 60 * time.Second
	for _, workers := range []int{1, 3} {
		var first [][]int
		for _, ra := range retryAfterKinds {
			t.Run(fmt.Sprintf("%d workers, Retry-After %s", workers, ra.name), func(t *testing.T) {
				s := runFleet(t, workers, ra.wantPace, d)
				ok, refused := s.byStatus[200], s.byStatus[429]
				rate := float64(ok) / d.Seconds()
				share := float64(refused) / float64(ok+refused)
				final := make([]int, workers)
				for w := range final {
					final[w] = s.limits[w][len(s.limits[w])-1]
				}
				t.Logf("ok %d (%.0f/s, %.2f of 600), 429 %d (%.2f%%), final limits %v", ok, rate, rate/600, refused, 100*share, final)
				if rate < 0.9*600 {
					t.Errorf("throughput %.0f/s, want at least 540/s", rate)
				}
				if share > 0.02 {
					t.Errorf("%.2f%% of requests answered 429, want at most 2%%", 100*share)
				}
				if first == nil {
					first = s.limits
				} else if !slices.EqualFunc(first, s.limits, slices.Equal) {
					t.Errorf("the limits learned differ from those learned from 429s without Retry-After")
				}
			})
		}
	}
}

// TestRetryAfterShrinksTheLimitTheSameWay: through a real sender to a real
// server, a 429 cuts the host's adaptive limit by the same factor whether
// it carries no Retry-After, seconds, or an HTTP date; only the retry's
// delay differs (the host's own, or for none the worker's backoff while
// the host's pace is unknown).
func TestRetryAfterShrinksTheLimitTheSameWay(t *testing.T) {
	future := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	kinds := map[string]struct {
		header   string
		min, max time.Duration // the outcome's RetryAfter
	}{
		"none":    {"", 0, 0},
		"seconds": {"1", time.Second, time.Second},
		"date":    {future, 58 * time.Minute, time.Hour},
	}
	for name, k := range kinds {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if k.header != "" {
					w.Header().Set("Retry-After", k.header)
				}
				w.WriteHeader(http.StatusTooManyRequests)
			}))
			defer srv.Close()
			clock := newClock()
			l, err := New(Config{MaxInflight: 10, InitialLimit: 10, Now: clock.now})
			if err != nil {
				t.Fatal(err)
			}
			s, err := sender.New(sender.Config{Admission: l, MaxRetryAfter: 2 * time.Hour,
				AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a liveness guard
			defer cancel()
			var limits []int
			for i := range 3 {
				o := s.Send(ctx, &job.Job{ID: fmt.Sprint("job-", i), Batch: "b", Method: http.MethodGet, URL: srv.URL})
				if o.Class != sender.Retryable || o.Status != http.StatusTooManyRequests {
					t.Fatalf("outcome %v status %d (%v): want a retryable 429", o.Class, o.Status, o.Err)
				}
				if o.RetryAfter < k.min || o.RetryAfter > k.max {
					t.Fatalf("retry after %v, want %v to %v", o.RetryAfter, k.min, k.max)
				}
				limits = append(limits, hostLimit(l, strings.TrimPrefix(srv.URL, "http://")))
			}
			// 10 × 0.9 per 429: 9, 8.1, 7.29.
			if want := []int{9, 8, 7}; !slices.Equal(limits, want) {
				t.Fatalf("limits after each 429: %v, want %v", limits, want)
			}
		})
	}
}

// TestWorkersShareOneLineOfRefusedJobs: with several workers (Peers), the
// jobs a host's concurrency limits refuse are lined up on one line in
// Buckets, whichever worker refused them, spaced for the sum of the
// workers' limits; each worker reserves places in blocks.
func TestWorkersShareOneLineOfRefusedJobs(t *testing.T) {
	clock := newClock()
	shared := &MemBuckets{}
	peers := 1
	a := sender.AdmitRequest{Host: fleetHost}
	var ls []*Limiter
	var held []*sender.Permit // ls[1]'s
	for range 3 {
		// MaxInflight 4 keeps each limit in slow start: lined up for 4.
		l, err := New(Config{MaxInflight: 4, InitialLimit: 4, Buckets: shared, Now: clock.now, Peers: func() int { return peers }})
		if err != nil {
			t.Fatal(err)
		}
		roundTrips(t, l, clock, a, 25, 40*time.Millisecond) // learn the latency, alone
		ls = append(ls, l)
	}
	for i, l := range ls {
		if rels := admitN(t, l, a, 4); i == 1 {
			held = rels
		}
	}
	peers = 3
	// Each worker's block is spaced for the limits of the workers that
	// booked places lately, itself included: 4, then 8, then 12.
	s4, s8, s12 := lineSpacing(40*time.Millisecond, 4), lineSpacing(40*time.Millisecond, 8), lineSpacing(40*time.Millisecond, 12)
	var waits []time.Duration
	for _, l := range []*Limiter{ls[0], ls[1], ls[2], ls[0]} {
		wait, ok := l.fleetWait(context.Background(), l.hosts[fleetHost], clock.now())
		if !ok {
			t.Fatal("no place on the fleet's line")
		}
		waits = append(waits, wait)
	}
	// ls[0] reserves the line's first 16 places, ls[1] the next 16, ls[2]
	// the 16 after those; ls[0] then hands out its second.
	want := []time.Duration{s4, 16*s4 + s8, 16*s4 + 16*s8 + s12, 2 * s4}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v (one line, blocks of %d)", waits, want, parkBlock)
	}
	// A refusal takes the sooner of its place on the fleet's line (ls[0]'s
	// third, 3×s4) and on the worker's own (s4: its first).
	if _, na := admit(t, ls[0], a); na == nil || na.Wait != s4 {
		t.Fatalf("refusal %v, want a wait of %v (its own line's first place)", na, s4)
	}
	// A 429 that asks for a pace alike: ls[1]'s own line is at s4, the
	// fleet's next place for it later.
	if d := held[0].Done(sender.Feedback{Sent: true, Status: 429, Latency: time.Millisecond, WantPace: true}); d != s4 {
		t.Fatalf("pace %v for a 429, want %v", d, s4)
	}
}

// TestFleetLineFallsBackToTheWorkersOwn: while Buckets cannot be reached, a
// worker sharing a host lines its refused jobs up on its own line, as a
// lone worker does.
func TestFleetLineFallsBackToTheWorkersOwn(t *testing.T) {
	clock := newClock()
	a := sender.AdmitRequest{Host: fleetHost}
	l, _ := New(Config{MaxInflight: 4, InitialLimit: 4, Now: clock.now, Peers: func() int { return 3 },
		Buckets: failingBuckets{errors.New("nats: connection closed")}})
	roundTrips(t, l, clock, a, 25, 40*time.Millisecond)
	admitN(t, l, a, 4)
	step := lineSpacing(40*time.Millisecond, 4)
	for i := 1; i <= 3; i++ {
		if _, na := admit(t, l, a); na == nil || na.Wait != time.Duration(i)*step {
			t.Fatalf("refusal %d: %v, want a wait of %v (its own line)", i, na, time.Duration(i)*step)
		}
	}
}

// admitN admits n requests, each of which must be let through.
func admitN(t *testing.T, l *Limiter, a sender.AdmitRequest, n int) []*sender.Permit {
	t.Helper()
	var rels []*sender.Permit
	for range n {
		rel, na := admit(t, l, a)
		if na != nil {
			t.Fatalf("refused below the limit: %v", na)
		}
		rels = append(rels, rel)
	}
	return rels
}

// TestFleetLineBlocksFollowTheRefusals: places of a reserved block that
// pass unused are holes in the fleet's line, so a worker that refuses
// fewer jobs than its blocks hold reserves smaller ones (down to one), and
// larger ones again (up to parkBlock) while it uses them all.
func TestFleetLineBlocksFollowTheRefusals(t *testing.T) {
	clock := newClock()
	a := sender.AdmitRequest{Host: fleetHost}
	l, _ := New(Config{MaxInflight: 4, InitialLimit: 4, Now: clock.now, Peers: func() int { return 3 }})
	roundTrips(t, l, clock, a, 25, 40*time.Millisecond)
	rels := admitN(t, l, a, 4)
	step := lineSpacing(40*time.Millisecond, 4)
	block := func() int { return l.buckets[lineKey(fleetHost)].block }
	var blocks []int
	for i := range 5 {
		if _, na := admit(t, l, a); na == nil { // reserves a block, uses one place
			t.Fatal("admitted beyond the limit")
		}
		blocks = append(blocks, block())
		clock.advance(time.Duration(parkBlock+1) * step) // the rest pass unused
		// An answer, so that the host does not look stalled, and a request
		// in its place.
		rels[i%4].Done(sender.Feedback{Sent: true, Status: 200, Latency: 40 * time.Millisecond})
		rels[i%4] = admitN(t, l, a, 1)[0]
	}
	for range 40 { // uses every place
		admit(t, l, a)
	}
	blocks = append(blocks, block())
	// (The round trips that taught the latency left some block already.)
	for i := 1; i < 5; i++ {
		if blocks[i] != max(1, blocks[i-1]/2) {
			t.Fatalf("blocks %v: each should halve, down to 1, while its places pass unused", blocks[:5])
		}
	}
	if blocks[4] != 1 || blocks[5] != parkBlock {
		t.Fatalf("blocks %v: want 1 after places passed unused, %d once all are used", blocks, parkBlock)
	}
}
