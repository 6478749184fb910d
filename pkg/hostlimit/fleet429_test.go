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

// TestWorkersPaceTheirLinesOnTheFleetsAverage: with several workers
// (Peers), each posts its limit for a host in Buckets (on a refusal, at
// most once a second) and paces its own line of refused jobs on the higher
// of its limit and the fleet's average, read at its last post.
func TestWorkersPaceTheirLinesOnTheFleetsAverage(t *testing.T) {
	clock := newClock()
	shared := &countingBuckets{Buckets: &MemBuckets{}}
	a := sender.AdmitRequest{Host: fleetHost}
	var ls []*Limiter
	peers := 1                             // alone while they learn the latency
	for _, limit := range []int{8, 2, 2} { // fixed limits: their average is 4
		l, err := New(Config{MaxInflight: limit, Fixed: true, Buckets: shared, Now: clock.now, Peers: func() int { return peers }})
		if err != nil {
			t.Fatal(err)
		}
		roundTrips(t, l, clock, a, 25, 40*time.Millisecond) // learn the latency
		ls = append(ls, l)
	}
	for i, limit := range []int{8, 2, 2} {
		admitN(t, ls[i], a, limit)
	}
	peers = 3
	lat := 40 * time.Millisecond
	// Each first refusal is paced on what the worker knew (its own limit),
	// and posts it.
	for i, own := range []float64{8, 2, 2} {
		if _, na := admit(t, ls[i], a); na == nil || na.Wait != lineSpacing(lat, own) {
			t.Fatalf("worker %d's first refusal: %v, want a wait of %v", i, na, lineSpacing(lat, own))
		}
	}
	// Averages read: 8 by the first, 5 by the second, 4 by the third.
	for i, want := range []float64{8, 5, 4} {
		if _, na := admit(t, ls[i], a); na == nil || na.Wait != lineSpacing(lat, []float64{8, 2, 2}[i])+lineSpacing(lat, want) {
			t.Fatalf("worker %d's second refusal: %v, want its line paced on %v", i, na, want)
		}
	}
	if shared.updates != 3 {
		t.Fatalf("%d posts, want one per worker within a second", shared.updates)
	}
	// A second on, the first posts again and reads 4; an average older
	// than shareTTL is not used.
	clock.advance(shareEvery)
	admit(t, ls[0], a)
	if got := ls[0].hosts[fleetHost].share.avg; got != 4 || shared.updates != 4 {
		t.Fatalf("average %v after %d posts, want 4 after 4", got, shared.updates)
	}
	ls[1].mu.Lock()
	if got := ls[1].fleetAvg(ls[1].hosts[fleetHost], clock.now().Add(shareTTL)); got != 0 {
		t.Errorf("a stale average %v was used", got)
	}
	ls[1].mu.Unlock()
}

// TestALoneWorkerPostsNothing: a worker alone on a host (Peers 1) paces
// its line on its own limit, with no round trip to Buckets.
func TestALoneWorkerPostsNothing(t *testing.T) {
	clock := newClock()
	shared := &countingBuckets{Buckets: &MemBuckets{}}
	a := sender.AdmitRequest{Host: fleetHost}
	l, _ := New(Config{MaxInflight: 4, Fixed: true, Buckets: shared, Now: clock.now})
	roundTrips(t, l, clock, a, 25, 40*time.Millisecond)
	admitN(t, l, a, 4)
	for range 3 {
		admit(t, l, a)
		clock.advance(shareEvery)
	}
	if shared.updates != 0 {
		t.Fatalf("%d posts by a lone worker, want none", shared.updates)
	}
}

// countingBuckets counts the round trips to the Buckets it wraps.
type countingBuckets struct {
	Buckets
	updates int
}

func (c *countingBuckets) Update(ctx context.Context, key string, fn func([]byte) ([]byte, error)) error {
	c.updates++
	return c.Buckets.Update(ctx, key, fn)
}

// TestFleetLineFallsBackToTheWorkersOwn: while Buckets cannot be reached, a
// worker sharing a host paces its line on its own limit, as a lone worker
// does.
func TestFleetLineFallsBackToTheWorkersOwn(t *testing.T) {
	clock := newClock()
	a := sender.AdmitRequest{Host: fleetHost}
	l, _ := New(Config{MaxInflight: 4, Fixed: true, Now: clock.now, Peers: func() int { return 3 },
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
