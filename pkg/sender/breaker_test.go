package sender

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/jetpost/jetpost/pkg/job"
)

type transition struct {
	host     string
	from, to job.BreakerState
}

// recorder collects OnBreakerChange calls.
type recorder struct {
	mu  sync.Mutex
	got []transition
}

func (r *recorder) record(host string, from, to job.BreakerState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, transition{host, from, to})
}

func (r *recorder) all() []transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]transition(nil), r.got...)
}

func hostOf(url string) string { return strings.TrimPrefix(url, "http://") }

// waitFor polls cond: a wait for a condition, bounded generously so a slow
// machine does not fail the test; nothing asserts how long it took.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBreakerOpensPerHost(t *testing.T) {
	down, downHits := serve(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	up, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {})
	var rec recorder
	s := newSender(t, Config{
		AllowedNetworks: loopback(),
		Breaker:         Breaker{Failures: 3, OpenTimeout: time.Hour},
		OnBreakerChange: rec.record,
	})

	for i := range 3 {
		if out := s.Send(t.Context(), newJob(down.URL)); out.Class != Retryable || !out.Attempted {
			t.Fatalf("send %d: %v attempted=%v", i+1, out.Class, out.Attempted)
		}
	}
	out := s.Send(t.Context(), newJob(down.URL))
	if out.Class != Postponed || out.Attempted || !errors.Is(out.Err, gobreaker.ErrOpenState) {
		t.Fatalf("4th send: %v attempted=%v err=%v; want defer, not attempted, open", out.Class, out.Attempted, out.Err)
	}
	if out.RetryAfter <= 0 || out.RetryAfter > time.Hour*3/2 {
		t.Errorf("defer RetryAfter %v, want about the open timeout (1h)", out.RetryAfter)
	}
	if n := downHits.Load(); n != 3 {
		t.Errorf("down host saw %d requests, want 3", n)
	}
	if out := s.Send(t.Context(), newJob(up.URL)); out.Class != Succeeded {
		t.Errorf("other host: %v %v; one open breaker must not affect other hosts", out.Class, out.Err)
	}
	states := s.BreakerStates()
	if states[hostOf(down.URL)] != "open" || states[hostOf(up.URL)] != "closed" {
		t.Errorf("states %v", states)
	}
	want := []transition{{hostOf(down.URL), "closed", "open"}}
	if got := rec.all(); len(got) != 1 || got[0] != want[0] {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

// A host is one endpoint however its URL spells it: with or without the
// scheme's default port, in any case. The jobs here name 127.0.0.1 on port
// 80; the test's transport takes every connection to the down server.
func TestBreakerKeyFillsInDefaultPort(t *testing.T) {
	down, downHits := serve(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	s := newSender(t, Config{AllowedNetworks: loopback(), Breaker: Breaker{Failures: 3, OpenTimeout: time.Hour}})
	dial := s.transport.DialContext
	s.transport.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dial(ctx, network, down.Listener.Addr().String())
	}
	for i, u := range []string{"http://127.0.0.1:80/a", "http://127.0.0.1/b", "HTTP://127.0.0.1:80/c"} {
		if out := s.Send(t.Context(), newJob(u)); out.Class != Retryable || !out.Attempted {
			t.Fatalf("send %d (%s): %v attempted=%v err=%v", i+1, u, out.Class, out.Attempted, out.Err)
		}
	}
	out := s.Send(t.Context(), newJob("http://127.0.0.1/d"))
	if out.Class != Postponed || !errors.Is(out.Err, gobreaker.ErrOpenState) {
		t.Fatalf("4th send: %v err=%v; want defer with the breaker open", out.Class, out.Err)
	}
	if n := downHits.Load(); n != 3 {
		t.Errorf("server saw %d requests, want 3", n)
	}
	if states := s.BreakerStates(); len(states) != 1 || states["127.0.0.1:80"] != "open" {
		t.Errorf("states %v, want one breaker, 127.0.0.1:80 open", states)
	}
}

// 4xx means the host is up; 408/425/429 mean "slow down". None of them may
// open the breaker: they count as answers, which keeps the failure ratio
// below the threshold.
func TestBreakerIgnoresClientErrors(t *testing.T) {
	codes := []int{404, 429, 408, 425, 400, 503, 404, 503, 429, 503}
	var i atomic.Int64
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(codes[int(i.Add(1)-1)%len(codes)])
	})
	var rec recorder
	s := newSender(t, Config{AllowedNetworks: loopback(), Breaker: Breaker{Failures: 2}, OnBreakerChange: rec.record})
	for range 3 * len(codes) {
		if out := s.Send(t.Context(), newJob(srv.URL)); out.Class == Postponed {
			t.Fatalf("deferred after %d requests (status sequence %v)", hits.Load(), codes)
		}
	}
	if got := rec.all(); len(got) != 0 {
		t.Errorf("transitions %v, want none", got)
	}
}

func TestBreakerRecovers(t *testing.T) {
	var healthy atomic.Bool
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusBadGateway)
		}
	})
	var rec recorder
	s := newSender(t, Config{
		AllowedNetworks: loopback(),
		Breaker:         Breaker{Failures: 1, OpenTimeout: 50 * time.Millisecond},
		OnBreakerChange: rec.record,
	})
	host := hostOf(srv.URL)

	if out := s.Send(t.Context(), newJob(srv.URL)); out.Class != Retryable {
		t.Fatalf("first send: %v", out.Class)
	}
	if st := s.BreakerStates()[host]; st != "open" && st != "half-open" {
		t.Fatalf("state after a failure: %s", st)
	}
	healthy.Store(true)
	waitFor(t, "half-open", func() bool { return s.BreakerStates()[host] == "half-open" })

	if out := s.Send(t.Context(), newJob(srv.URL)); out.Class != Succeeded || !out.Attempted {
		t.Fatalf("probe: %v attempted=%v err=%v", out.Class, out.Attempted, out.Err)
	}
	if st := s.BreakerStates()[host]; st != "closed" {
		t.Errorf("state after a successful probe: %s", st)
	}
	want := []transition{{host, "closed", "open"}, {host, "open", "half-open"}, {host, "half-open", "closed"}}
	got := rec.all()
	if len(got) != len(want) {
		t.Fatalf("transitions %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("transition %d: %v, want %v", i, got[i], want[i])
		}
	}
}

// While the half-open probe is out, other jobs for the host are deferred for
// a shorter time: the probe will decide soon.
func TestBreakerHalfOpenProbeLimit(t *testing.T) {
	var mode atomic.Int32 // 0: fail, 1: block until released
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if mode.Load() == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	const openFor = 50 * time.Millisecond
	s := newSender(t, Config{AllowedNetworks: loopback(), Breaker: Breaker{Failures: 1, OpenTimeout: openFor, HalfOpenRequests: 1}})
	s.rnd = func() float64 { return 0.5 }
	host := hostOf(srv.URL)

	s.Send(t.Context(), newJob(srv.URL))
	mode.Store(1)
	waitFor(t, "half-open", func() bool { return s.BreakerStates()[host] == "half-open" })

	probe := make(chan Outcome, 1)
	go func() { probe <- s.Send(context.Background(), newJob(srv.URL)) }()
	select {
	case <-entered:
	case out := <-probe:
		t.Fatalf("probe not sent: %v %v", out.Class, out.Err)
	}

	out := s.Send(t.Context(), newJob(srv.URL))
	if out.Class != Postponed || out.Attempted || !errors.Is(out.Err, gobreaker.ErrTooManyRequests) {
		t.Errorf("during the probe: %v attempted=%v err=%v; want defer", out.Class, out.Attempted, out.Err)
	}
	if out.RetryAfter != openFor/4 {
		t.Errorf("RetryAfter %v, want %v with rnd pinned at 0.5", out.RetryAfter, openFor/4)
	}
	close(release)
	if out := <-probe; out.Class != Succeeded {
		t.Errorf("probe: %v %v", out.Class, out.Err)
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("server saw %d requests, want 2", n)
	}
	if st := s.BreakerStates()[host]; st != "closed" {
		t.Errorf("state %s, want closed", st)
	}
}

// Shutdown is not a host failure: a worker that cancels its in-flight
// requests must not open breakers on the way out.
func TestCancellationIsNotABreakerFailure(t *testing.T) {
	entered := make(chan struct{}, 1)
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done()
	})
	var rec recorder
	s := newSender(t, Config{AllowedNetworks: loopback(), Breaker: Breaker{Failures: 1}, OnBreakerChange: rec.record})
	shutdown := errors.New("shutting down")

	t.Run("before sending", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(t.Context())
		cancel(shutdown)
		for range 3 {
			out := s.Send(ctx, newJob(srv.URL))
			if out.Class != Postponed || out.Attempted || !errors.Is(out.Err, context.Canceled) || !errors.Is(out.Err, shutdown) {
				t.Fatalf("got %v attempted=%v err=%v; want defer, not attempted, cancelled by shutdown", out.Class, out.Attempted, out.Err)
			}
		}
		if n := hits.Load(); n != 0 {
			t.Errorf("server saw %d requests", n)
		}
	})

	t.Run("while sending", func(t *testing.T) {
		for range 3 {
			ctx, cancel := context.WithCancelCause(t.Context())
			done := make(chan Outcome)
			go func() { done <- s.Send(ctx, newJob(srv.URL)) }()
			select {
			case <-entered:
			case out := <-done: // deferred, not sent: the breaker opened
				cancel(nil)
				t.Fatalf("not sent: %v %v", out.Class, out.Err)
			}
			cancel(shutdown)
			out := <-done
			if out.Class != Retryable || !out.Attempted || !errors.Is(out.Err, shutdown) {
				t.Fatalf("got %v attempted=%v err=%v; want retry, attempted, cancelled by shutdown", out.Class, out.Attempted, out.Err)
			}
		}
	})

	if st := s.BreakerStates()[hostOf(srv.URL)]; st != "closed" {
		t.Errorf("breaker %s after cancellations, want closed", st)
	}
	if got := rec.all(); len(got) != 0 {
		t.Errorf("transitions %v, want none", got)
	}
}

// OnBreakerChange runs under the breaker's lock; reading the states from it
// must still be safe.
func TestOnBreakerChangeMayReadStates(t *testing.T) {
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	var s *Sender
	var seen atomic.Value
	s = newSender(t, Config{
		AllowedNetworks: loopback(),
		Breaker:         Breaker{Failures: 1, OpenTimeout: time.Hour},
		OnBreakerChange: func(host string, from, to job.BreakerState) { seen.Store(s.BreakerStates()[host]) },
	})
	s.Send(t.Context(), newJob(srv.URL))
	if got, _ := seen.Load().(job.BreakerState); got != job.BreakerOpen {
		t.Errorf("state seen from the callback: %q, want open", got)
	}
}

func TestConcurrentSends(t *testing.T) {
	var servers []string
	for _, code := range []int{200, 503, 404} {
		srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })
		servers = append(servers, srv.URL)
	}
	s := newSender(t, Config{AllowedNetworks: loopback(), MaxConnsPerHost: 8, Breaker: Breaker{Failures: 5, OpenTimeout: time.Hour}})

	var wg sync.WaitGroup
	var kinds [4]atomic.Int64
	for g := range 32 {
		wg.Go(func() {
			for i := range 20 {
				out := s.Send(t.Context(), newJob(servers[(g+i)%len(servers)]))
				kinds[out.Class].Add(1)
				_ = s.BreakerStates()
			}
		})
	}
	wg.Wait()
	states := s.BreakerStates()
	if len(states) != 3 || states[hostOf(servers[0])] != "closed" || states[hostOf(servers[1])] != "open" || states[hostOf(servers[2])] != "closed" {
		t.Errorf("states %v", states)
	}
	if kinds[Postponed].Load() == 0 || kinds[Succeeded].Load() == 0 || kinds[Permanent].Load() == 0 {
		t.Errorf("kinds: success %d retry %d permanent %d defer %d", kinds[0].Load(), kinds[1].Load(), kinds[2].Load(), kinds[3].Load())
	}
}

// Hosts come from untrusted files: a breaker unused for breakerIdle is
// forgotten, unless it is open and its open timeout has not passed; one
// forgotten while not closed is reported closed.
func TestIdleBreakersAreForgotten(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var changes []string
	b := &breakers{settings: Breaker{Failures: 1, OpenTimeout: time.Hour, HalfOpenRequests: 1}, now: func() time.Time { return now },
		onChange: func(host string, from, to job.BreakerState) {
			changes = append(changes, host+" "+string(from)+"->"+string(to))
		}}
	for _, h := range []string{"idle:443", "open:443", "busy:443"} {
		b.get(h)
	}
	done, err := b.get("open:443").cb.Allow()
	if err != nil {
		t.Fatal(err)
	}
	done(errors.New("down")) // opens it
	hosts := func() []string {
		var out []string
		b.m.Range(func(k, _ any) bool { out = append(out, k.(string)); return true })
		slices.Sort(out)
		return out
	}
	now = now.Add(breakerIdle / 2)
	b.get("busy:443")
	now = now.Add(breakerIdle/2 + time.Second)
	b.get("busy:443") // sweeps: idle is past breakerIdle, busy was used since
	if got := hosts(); !slices.Equal(got, []string{"busy:443", "open:443"}) {
		t.Fatalf("breakers kept: %v, want busy and open", got)
	}
	// A forgotten host gets a fresh breaker when it comes back.
	if st := b.get("idle:443").current(now); st != gobreaker.StateClosed {
		t.Fatalf("returning host's breaker: %v", st)
	}
	// Once its open timeout has passed, the idle open breaker goes too,
	// reported closed.
	now = now.Add(time.Hour)
	b.get("busy:443")
	if got := hosts(); !slices.Equal(got, []string{"busy:443"}) {
		t.Fatalf("breakers kept after the open timeout: %v, want busy only", got)
	}
	if want := []string{"open:443 closed->open", "open:443 half-open->closed"}; !slices.Equal(changes, want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
}

func TestBreakerPolicy(t *testing.T) {
	p := Breaker{Failures: 10, FailureRatio: 0.5}
	for _, tc := range []struct {
		ok, failed uint32
		want       bool
	}{
		{0, 9, false},   // too few failures, however high the ratio
		{0, 10, true},   // a host that is down
		{10, 10, true},  // half failed
		{11, 10, false}, // just under half
		{90, 10, false}, // one endpoint broken in a healthy stream
		{90, 90, true},
	} {
		c := gobreaker.Counts{Requests: tc.ok + tc.failed, TotalSuccesses: tc.ok, TotalFailures: tc.failed, ConsecutiveFailures: tc.failed}
		if got := p.tripped(c); got != tc.want {
			t.Errorf("%d ok, %d failed: tripped %v, want %v", tc.ok, tc.failed, got, tc.want)
		}
	}
}

// One always-failing endpoint on a healthy host does not open the host's
// breaker, even when its failures come in runs; the whole host going down
// opens it after Failures requests.
func TestBreakerOpensOnRateNotStreak(t *testing.T) {
	var down atomic.Bool
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if down.Load() || r.URL.Path == "/orders/7" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	var rec recorder
	s := newSender(t, Config{AllowedNetworks: loopback(), OnBreakerChange: rec.record,
		Breaker: Breaker{Failures: 5, FailureRatio: 0.5, Window: time.Hour, OpenTimeout: time.Hour}})
	// Runs of 8 failures (longer than Failures) between runs of 12 answers.
	for i := range 200 {
		path := "/orders/1"
		if i%20 >= 12 {
			path = "/orders/7"
		}
		if out := s.Send(t.Context(), newJob(srv.URL+path)); out.Class == Postponed {
			t.Fatalf("request %d deferred: %v; 40%% failures must not open the breaker", i, out.Err)
		}
	}
	if got := rec.all(); len(got) != 0 {
		t.Fatalf("transitions %v, want none", got)
	}
	down.Store(true)
	sent := hits.Load()
	for range 200 {
		if out := s.Send(t.Context(), newJob(srv.URL+"/orders/1")); out.Class == Postponed {
			break
		}
	}
	// 80 failures and 120 answers before: the ratio reaches 0.5 after 40 more.
	if n := hits.Load() - sent; n != 40 {
		t.Errorf("host down: %d requests before the breaker opened, want 40", n)
	}
}

// Failures that left the rolling window no longer count: a failure, an
// idle gap longer than the window, and another failure do not make two.
func TestBreakerWindowRolls(t *testing.T) {
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	var rec recorder
	// gobreaker rolls its window on its own clock: a short real window,
	// waited out by watching its counts (no elapsed time is asserted).
	s := newSender(t, Config{AllowedNetworks: loopback(), OnBreakerChange: rec.record,
		Breaker: Breaker{Failures: 2, FailureRatio: 1, Window: 50 * time.Millisecond, OpenTimeout: time.Hour}})
	s.Send(t.Context(), newJob(srv.URL))
	hb := s.breakers.get(hostOf(srv.URL))
	waitFor(t, "the failure to leave the window", func() bool {
		hb.cb.State() // rolls the window
		return hb.cb.Counts().TotalFailures == 0
	})
	if out := s.Send(t.Context(), newJob(srv.URL)); out.Class != Retryable || !out.Attempted {
		t.Fatalf("second failure: %v attempted=%v", out.Class, out.Attempted)
	}
	if got := rec.all(); len(got) != 0 {
		t.Errorf("transitions %v, want none: the two failures were a window apart", got)
	}
}

// A turn-away says so in a *BreakerOpenError, and waits until the breaker
// lets a probe through, measured on the injected clock.
func TestBreakerTurnAwayUsesInjectedClock(t *testing.T) {
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	now := time.Date(2026, 1, 1, 10, 17, 3, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newSender(t, Config{AllowedNetworks: loopback(), Breaker: Breaker{Failures: 1, OpenTimeout: time.Hour}})
	s.breakers.now = clock
	s.rnd = func() float64 { return 0 }
	s.Send(t.Context(), newJob(srv.URL))
	mu.Lock()
	now = now.Add(10 * time.Minute)
	mu.Unlock()
	out := s.Send(t.Context(), newJob(srv.URL))
	var open *BreakerOpenError
	if out.Class != Postponed || out.Attempted || !errors.As(out.Err, &open) || !errors.Is(out.Err, gobreaker.ErrOpenState) {
		t.Fatalf("got %v attempted=%v err=%v; want a turn-away", out.Class, out.Attempted, out.Err)
	}
	if open.Host != hostOf(srv.URL) || open.State != "open" || !open.Since.Equal(now.Add(-10*time.Minute)) {
		t.Errorf("turn-away %+v", open)
	}
	if out.RetryAfter != 50*time.Minute {
		t.Errorf("RetryAfter %v, want the 50m left of the open timeout (jitter pinned at 0)", out.RetryAfter)
	}
	// gobreaker's own clock has not moved an hour: still open, and the
	// reported state follows the injected clock past the open timeout.
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	if st := s.BreakerStates()[hostOf(srv.URL)]; st != "half-open" {
		t.Errorf("state %s after the open timeout on the injected clock, want half-open", st)
	}
}

// The request a half-open breaker lets through is a job's real attempt:
// sent, counted for that job, and its outcome (failed or not) is the job's
// and decides the breaker.
func TestHalfOpenProbeIsTheJobsAttempt(t *testing.T) {
	var healthy atomic.Bool
	var probes sync.Map // idempotency key -> requests
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := probes.LoadOrStore(r.Header.Get("Idempotency-Key"), new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if !healthy.Load() {
			w.WriteHeader(http.StatusBadGateway)
		}
	})
	var rec recorder
	s := newSender(t, Config{AllowedNetworks: loopback(), IdempotencyHeader: DefaultIdempotencyHeader, OnBreakerChange: rec.record,
		Breaker: Breaker{Failures: 1, OpenTimeout: 20 * time.Millisecond}})
	host := hostOf(srv.URL)
	job1 := newJob(srv.URL)
	job1.ID = "opener"
	s.Send(t.Context(), job1)

	for i, wantOK := range []bool{false, true} {
		healthy.Store(wantOK)
		waitFor(t, "half-open", func() bool { return s.BreakerStates()[host] == "half-open" })
		j := newJob(srv.URL)
		j.ID = fmt.Sprintf("probe-%d", i)
		out := s.Send(t.Context(), j)
		if !out.Attempted || (out.Class == Succeeded) != wantOK || (!wantOK && out.Status != http.StatusBadGateway) {
			t.Fatalf("probe %d: %v attempted=%v status=%d; want the job's own attempt and outcome", i, out.Class, out.Attempted, out.Status)
		}
		if n, ok := probes.Load(j.ID); !ok || n.(*atomic.Int64).Load() != 1 {
			t.Errorf("probe %d: the target did not see exactly one request of job %s", i, j.ID)
		}
	}
	want := []transition{{host, "closed", "open"}, {host, "open", "half-open"}, {host, "half-open", "open"},
		{host, "open", "half-open"}, {host, "half-open", "closed"}}
	if got := rec.all(); !slices.Equal(got, want) {
		t.Errorf("transitions %v, want %v", got, want)
	}
}
