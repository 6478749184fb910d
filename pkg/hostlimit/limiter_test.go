package hostlimit

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/sender"
)

func admit(t *testing.T, l *Limiter, r sender.AdmitRequest) (*sender.Permit, *sender.NotAdmittedError) {
	t.Helper()
	rel, err := l.Admit(context.Background(), r)
	if err == nil {
		return rel, nil
	}
	var na *sender.NotAdmittedError
	if !errors.As(err, &na) {
		t.Fatalf("refusal is %T %v, want *sender.NotAdmittedError", err, err)
	}
	if na.Wait <= 0 {
		t.Fatalf("refusal without a wait: %v", na)
	}
	return nil, na
}

// roundTrips runs n round trips at full use of a's limit: as many requests
// as admitted, all answered 200 after lat of the fake clock.
func roundTrips(t *testing.T, l *Limiter, clock *fakeClock, a sender.AdmitRequest, n int, lat time.Duration) {
	t.Helper()
	for range n {
		var rels []*sender.Permit
		for {
			rel, na := admit(t, l, a)
			if na != nil {
				break
			}
			rels = append(rels, rel)
		}
		clock.advance(lat)
		for _, rel := range rels {
			rel.Done(sender.Feedback{Sent: true, Status: 200, Latency: lat})
		}
	}
}

func TestFixedCapPerHost(t *testing.T) {
	clock := newClock()
	l, err := New(Config{MaxInflight: 3, Fixed: true, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	a := sender.AdmitRequest{Host: "a.example:443"}
	var rels []*sender.Permit
	for range 3 {
		rel, na := admit(t, l, a)
		if na != nil {
			t.Fatalf("refused below the cap: %v", na)
		}
		rels = append(rels, rel)
	}
	_, na := admit(t, l, a)
	if na == nil || !strings.Contains(na.Reason, "concurrency limit 3") || na.Host != a.Host {
		t.Fatalf("4th request: %v, want refused at the concurrency limit", na)
	}
	// Another host is not affected by a's full cap.
	if _, na := admit(t, l, sender.AdmitRequest{Host: "b.example:443"}); na != nil {
		t.Fatalf("other host refused: %v", na)
	}
	// A fixed limit does not move, whatever the host says.
	rels[0].Done(sender.Feedback{Sent: true, Status: 429})
	rels[0].Done(sender.Feedback{Sent: true, Status: 429}) // a second release is ignored
	if got := hostLimit(l, a.Host); got != 3 {
		t.Fatalf("fixed limit moved to %d", got)
	}
	if _, na := admit(t, l, a); na != nil {
		t.Fatalf("refused after a release: %v", na)
	}
	st := l.Snapshot()
	if len(st) != 2 || st[0].Host != a.Host || st[0].InFlight != 3 || st[0].Refused != 1 || st[0].Adaptive {
		t.Fatalf("snapshot %+v", st)
	}
}

func TestRefusedJobsAreSpacedNotBunched(t *testing.T) {
	// Once the host's pace is known, refused jobs are booked at successive
	// places (about latency/limit/overbook apart), not told the same wait.
	clock := newClock()
	l, _ := New(Config{MaxInflight: 10, InitialLimit: 10, Now: clock.now})
	a := sender.AdmitRequest{Host: "a.example:443"}
	// Learn a 100 ms latency at full use.
	roundTrips(t, l, clock, a, 30, 100*time.Millisecond)
	lim := hostLimit(l, a.Host)
	for range lim {
		if _, na := admit(t, l, a); na != nil {
			t.Fatal(na)
		}
	}
	var waits []time.Duration
	for range 100 {
		_, na := admit(t, l, a)
		if na == nil {
			t.Fatal("admitted beyond the limit")
		}
		waits = append(waits, na.Wait)
	}
	step := time.Duration(float64(100*time.Millisecond) / float64(lim) / overbookConcurrency)
	for i := 1; i < len(waits); i++ {
		if d := waits[i] - waits[i-1]; d < step*9/10 || d > step*11/10 {
			t.Fatalf("wait %d is %v after the previous, want about %v (limit %d)", i, d, step, lim)
		}
	}
}

func TestRefusalsWhileThePaceIsUnknownAreShort(t *testing.T) {
	clock := newClock()
	l, _ := New(Config{MaxInflight: 2, Fixed: true, Now: clock.now})
	a := sender.AdmitRequest{Host: "a.example:443"}
	admit(t, l, a)
	admit(t, l, a)
	for range 50 {
		_, na := admit(t, l, a)
		if na == nil || na.Wait > 2*latencyGuess {
			t.Fatalf("refusal %v: want a short wait while no answer came back", na)
		}
	}
	// A host whose requests hang makes the waits grow with the hang.
	clock.advance(20 * time.Second)
	_, na := admit(t, l, a)
	if na == nil || na.Wait < 10*time.Second {
		t.Fatalf("refusal %v after 20s without an answer: want a wait of the order of the hang", na)
	}
}

func TestRateLimitOneProcess(t *testing.T) {
	clock := newClock()
	rules, _ := ParseRules("api.example.com=10/s:2")
	l, _ := New(Config{MaxInflight: 100, Rates: rules, Now: clock.now})
	a := sender.AdmitRequest{Host: "api.example.com:443"}
	admitted := 0
	var lastRefusal *sender.NotAdmittedError
	// 10 simulated seconds in 1 ms steps, trying 5 requests each step.
	for step := 0; step < 10000; step++ {
		for range 5 {
			rel, na := admit(t, l, a)
			if na != nil {
				lastRefusal = na
				break
			}
			admitted++
			rel.Done(sender.Feedback{Sent: true, Status: 200, Latency: time.Millisecond})
		}
		clock.advance(time.Millisecond)
	}
	// 10 s at 10/s plus the burst of 2; a lease lapsing unused may cost a
	// token or two, never add one.
	if admitted > 102 || admitted < 98 {
		t.Fatalf("admitted %d in 10 s at 10/s burst 2, want 100 (+2)", admitted)
	}
	if lastRefusal == nil || !strings.Contains(lastRefusal.Reason, "rate limit 10/s:2") {
		t.Fatalf("refusal %v, want one naming the rate limit", lastRefusal)
	}
	// Hosts without a rule are not rate-limited.
	for range 50 {
		rel, na := admit(t, l, sender.AdmitRequest{Host: "free.example.com:443"})
		if na != nil {
			t.Fatalf("unlimited host refused: %v", na)
		}
		rel.Done(sender.Feedback{Sent: true, Status: 200})
	}
}

func TestBatchRateAppliesToItsBatchOnly(t *testing.T) {
	clock := newClock()
	l, _ := New(Config{MaxInflight: 100, Now: clock.now})
	slow := sender.AdmitRequest{Host: "api.example.com:443", Batch: "b1", BatchRate: 5}
	other := sender.AdmitRequest{Host: "api.example.com:443", Batch: "b2"}
	got := map[string]int{}
	for step := 0; step < 2000; step++ { // 2 s
		for _, r := range []sender.AdmitRequest{slow, other} {
			if rel, na := admit(t, l, r); na == nil {
				got[r.Batch]++
				rel.Done(sender.Feedback{Sent: true, Status: 200})
			}
		}
		clock.advance(time.Millisecond)
	}
	if got["b1"] < 10 || got["b1"] > 11 {
		t.Errorf("batch at 5/s got %d requests in 2 s, want 10 (+1 burst)", got["b1"])
	}
	if got["b2"] != 2000 {
		t.Errorf("batch without a rate got %d of 2000", got["b2"])
	}
}

type failingBuckets struct{ err error }

func (f failingBuckets) Update(context.Context, string, func([]byte) ([]byte, error)) error {
	return f.err
}

func TestUnreachableRateStateFailsClosed(t *testing.T) {
	clock := newClock()
	rules, _ := ParseRules("api.example.com=100/s")
	l, _ := New(Config{MaxInflight: 10, Rates: rules, Buckets: failingBuckets{errors.New("nats: connection closed")}, Now: clock.now})
	for range 20 {
		_, na := admit(t, l, sender.AdmitRequest{Host: "api.example.com:443"})
		if na == nil {
			t.Fatal("admitted without reaching the rate state")
		}
		if !strings.Contains(na.Reason, "unreachable") || na.Wait < unreachableWait/2 || na.Wait > 2*unreachableWait {
			t.Fatalf("refusal %v: want 'unreachable' and about %v", na, unreachableWait)
		}
	}
	// The refusals freed their slots, and other hosts go on.
	if st := l.Snapshot(); st[0].InFlight != 0 {
		t.Fatalf("refused requests hold %d slots", st[0].InFlight)
	}
	if _, na := admit(t, l, sender.AdmitRequest{Host: "other.example:443"}); na != nil {
		t.Fatalf("unlimited host refused: %v", na)
	}
}

func TestSlowRoundTripHoldsUpNoOne(t *testing.T) {
	rules, _ := ParseRules("api.example.com=100/s")
	entered, block := make(chan struct{}, 1), make(chan struct{})
	l, _ := New(Config{MaxInflight: 10, Rates: rules, Buckets: &blockingBuckets{entered: entered, block: block}})
	a := sender.AdmitRequest{Host: "api.example.com:443"}
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := l.Admit(ctx, a)
		first <- err
	}()
	<-entered // the first request is in its round trip to the shared state
	// Others are not made to wait for it: refused at once, to come back.
	if _, na := admit(t, l, a); na == nil || !strings.Contains(na.Reason, "rate limit") {
		t.Fatalf("second request: %v, want refused at once", na)
	}
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("Admit after cancel: %v", err)
	}
	close(block)
	if st := l.Snapshot(); st[0].InFlight != 0 {
		t.Fatalf("refused and cancelled requests hold %d slots", st[0].InFlight)
	}
}

// blockingBuckets blocks token leases until block is closed; the shared
// schedule of refused jobs answers at once.
type blockingBuckets struct {
	entered, block chan struct{}
	park           MemBuckets
}

func (b *blockingBuckets) Update(ctx context.Context, key string, fn func([]byte) ([]byte, error)) error {
	if strings.HasSuffix(key, ".park") {
		return b.park.Update(ctx, key, fn)
	}
	b.entered <- struct{}{}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-b.block:
		return errors.New("unblocked")
	}
}

func TestIdleHostsAreForgotten(t *testing.T) {
	clock := newClock()
	l, _ := New(Config{MaxInflight: 10, IdleAfter: time.Minute, Now: clock.now})
	for i := range 3000 {
		rel, na := admit(t, l, sender.AdmitRequest{Host: "h" + string(rune('a'+i%26)) + ".example:" + itoa(i)})
		if na != nil {
			t.Fatal(na)
		}
		rel.Done(sender.Feedback{Sent: true, Status: 200})
	}
	clock.advance(2 * time.Minute)
	rel, _ := admit(t, l, sender.AdmitRequest{Host: "busy.example:443"})
	_ = rel
	clock.advance(2 * time.Minute) // a sweep runs at most once a minute
	admit(t, l, sender.AdmitRequest{Host: "last.example:443"})
	hosts := l.Snapshot()
	if len(hosts) != 2 {
		t.Fatalf("%d hosts remembered, want the one in flight and the last one", len(hosts))
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestNewValidates(t *testing.T) {
	for _, c := range []Config{
		{},
		{MaxInflight: 1, Backoff: 1},
		{MaxInflight: 1, Backoff: 0.2},
		{MaxInflight: 1, LatencyTolerance: 0.5},
		{MaxInflight: 1, InitialLimit: -1},
		{MaxInflight: 1, MaxDefer: -time.Second},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	l, err := New(Config{MaxInflight: 4})
	if err != nil {
		t.Fatal(err)
	}
	if l.cfg.InitialLimit != 4 {
		t.Errorf("initial limit %d, want capped at MaxInflight 4", l.cfg.InitialLimit)
	}
}

// warm teaches l the host's latency with enough answers: requests wait in
// the buffer only for a host that has answered.
func warm(t *testing.T, l *Limiter, r sender.AdmitRequest, lat time.Duration) {
	t.Helper()
	for range minSamples {
		rel, na := admit(t, l, r)
		if na != nil {
			t.Fatal(na)
		}
		rel.Done(sender.Feedback{Sent: true, Status: 200, Latency: lat})
	}
}

func TestWaitingBufferHandsOverFreedSlots(t *testing.T) {
	clock := newClock()
	l, _ := New(Config{MaxInflight: 1, Fixed: true, MaxWaiting: 1, MaxWait: time.Hour, Now: clock.now})
	a := sender.AdmitRequest{Host: "a.example:443"}
	warm(t, l, a, time.Second)
	first, na := admit(t, l, a)
	if na != nil {
		t.Fatal(na)
	}
	got := make(chan *sender.Permit)
	go func() {
		rel, err := l.Admit(context.Background(), a)
		if err != nil {
			t.Error(err)
		}
		got <- rel
	}()
	// Wait (without sleeping) until the second request is in the buffer.
	for l.Snapshot()[0].Waiting != 1 {
		runtime.Gosched()
	}
	// The buffer is full (one per process here): the next is refused at once.
	if _, na := admit(t, l, a); na == nil {
		t.Fatal("a third request was admitted past a full buffer")
	}
	// So is a request for another host: it has no slot problem, it is
	// admitted at once whatever the buffer holds.
	if _, na := admit(t, l, sender.AdmitRequest{Host: "b.example:443"}); na != nil {
		t.Fatalf("other host refused: %v", na)
	}
	first.Done(sender.Feedback{Sent: true, Status: 200})
	second := <-got
	st := l.Snapshot()
	if st[0].InFlight != 1 || st[0].Waiting != 0 {
		t.Fatalf("after the hand-over: %+v", st[0])
	}
	second.Done(sender.Feedback{Sent: true, Status: 200})
}

func TestWaitingEndsWithTheWaitOrTheContext(t *testing.T) {
	l, _ := New(Config{MaxInflight: 1, Fixed: true, MaxWaiting: 5, MaxWait: 5 * time.Millisecond})
	a := sender.AdmitRequest{Host: "a.example:443"}
	warm(t, l, a, time.Minute)
	if _, err := l.Admit(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	// The slot never frees: the waiter is refused once its wait is over.
	_, err := l.Admit(context.Background(), a)
	var na *sender.NotAdmittedError
	if !errors.As(err, &na) || na.Wait <= 0 {
		t.Fatalf("after waiting: %v, want a refusal with a wait", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l2, _ := New(Config{MaxInflight: 1, Fixed: true, MaxWaiting: 5, MaxWait: time.Hour})
	warm(t, l2, a, time.Minute)
	if _, err := l2.Admit(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Admit(ctx, a); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	for _, lim := range []*Limiter{l, l2} {
		if st := lim.Snapshot()[0]; st.InFlight != 1 || st.Waiting != 0 || lim.waiting != 0 {
			t.Fatalf("after the waits: %+v, %d waiting", st, lim.waiting)
		}
	}
}

// A job answered 429 by an adaptive host is given the next place in the
// host's line, after the jobs refused before it; a fixed limit and a host
// whose pace is unknown leave it to the worker's backoff, and a 429 that
// asks no pace (the host named its Retry-After) books no place.
func TestPaceBooksA429InTheHostsLine(t *testing.T) {
	clock := newClock()
	l, _ := New(Config{MaxInflight: 4, InitialLimit: 4, Now: clock.now})
	a := sender.AdmitRequest{Host: "a.example:443"}
	paced := sender.Feedback{Sent: true, Status: 429, Latency: time.Millisecond, WantPace: true}
	// Learn a 40 ms latency at full use.
	roundTrips(t, l, clock, a, 30, 40*time.Millisecond)
	var rels []*sender.Permit
	for range hostLimit(l, a.Host) {
		rel, _ := admit(t, l, a)
		rels = append(rels, rel)
	}
	_, first := admit(t, l, a)
	_, second := admit(t, l, a)
	if first == nil || second == nil {
		t.Fatal("admitted beyond the limit")
	}
	pace := rels[0].Done(paced)
	if pace <= second.Wait || pace > second.Wait+40*time.Millisecond {
		t.Fatalf("pace %v after refusals told %v and %v: want the next place in the line", pace, first.Wait, second.Wait)
	}
	cursor := l.hosts[a.Host].cursor
	if d := rels[1].Done(sender.Feedback{Sent: true, Status: 429, Latency: time.Millisecond}); d != 0 || !l.hosts[a.Host].cursor.Equal(cursor) {
		t.Fatalf("a 429 asking no pace answered %v and moved the line by %v", d, l.hosts[a.Host].cursor.Sub(cursor))
	}

	// A run of 429s is a host out of quota, not of concurrency: back off.
	// (A refused request's slot is held for a latency: each request below
	// comes after that.)
	for _, rel := range rels[2:] {
		rel.Done(sender.Feedback{Sent: true, Status: 200, Latency: 40 * time.Millisecond})
	}
	var last time.Duration
	for range maxPacedRefusals + 1 {
		clock.advance(40 * time.Millisecond)
		rel, na := admit(t, l, a)
		if na != nil {
			t.Fatalf("refused with nothing in flight: %v", na)
		}
		last = rel.Done(paced)
	}
	if last != 0 {
		t.Fatalf("pace after %d 429s in a row: %v, want 0 (the worker's backoff)", maxPacedRefusals+1, last)
	}
	clock.advance(40 * time.Millisecond)
	rel, _ := admit(t, l, a)
	rel.Done(sender.Feedback{Sent: true, Status: 200, Latency: 40 * time.Millisecond})
	rel, _ = admit(t, l, a)
	if d := rel.Done(paced); d <= 0 {
		t.Fatal("a success ends the run of 429s: pacing resumes")
	}

	// Before the host's pace is known: back off.
	fresh, _ := New(Config{MaxInflight: 4, Now: clock.now})
	rel, _ = admit(t, fresh, a)
	if d := rel.Done(paced); d != 0 {
		t.Fatalf("pace for a host that never answered 2xx: %v, want 0", d)
	}

	fixed, _ := New(Config{MaxInflight: 4, Fixed: true, Now: clock.now})
	rel, _ = admit(t, fixed, a)
	if d := rel.Done(paced); d != 0 {
		t.Fatalf("pace with a fixed limit: %v, want 0 (the worker's backoff)", d)
	}
}

// While a host's limit is still doubling (slow start), refused jobs are
// lined up for the ceiling, not for the limit of the moment: a slow host
// on its way from 20 to 1,000 must not find its jobs parked minutes out.
func TestSlowStartLinesUpForTheCeiling(t *testing.T) {
	clock := newClock()
	l, _ := New(Config{MaxInflight: 1000, Now: clock.now})
	a := sender.AdmitRequest{Host: "slow.example:443"}
	roundTrips(t, l, clock, a, 1, time.Second)
	lim := hostLimit(l, a.Host)
	if lim >= 1000 {
		t.Fatalf("limit %d after one round trip: the test needs a host still in slow start", lim)
	}
	for range lim {
		admit(t, l, a)
	}
	_, first := admit(t, l, a)
	_, second := admit(t, l, a)
	step := time.Duration(float64(time.Second) / 1000 / overbookConcurrency)
	if first == nil || second == nil || second.Wait-first.Wait != step {
		t.Fatalf("refusals %v then %v with limit %d: want them %v apart (the ceiling's pace)", first, second, lim, step)
	}
}

// A fast host's requests wait for a slot rather than being parked: it
// frees a slot many times within fastHostWait, and a parked job costs a
// delayed NAK and a redelivery. A slow host keeps six waiters per slot.
func TestAFastHostsRequestsWaitInsteadOfParking(t *testing.T) {
	clock := newClock()
	l, _ := New(Config{MaxInflight: 2, Fixed: true, MaxWaiting: 1000, MaxWait: time.Second, Now: clock.now})
	for _, tc := range []struct {
		host      string
		lat       time.Duration
		may, wait int // waiters allowed; their wait in ms
	}{
		{"fast.example:443", time.Millisecond, 200, 1000},
		{"slow.example:443", 50 * time.Millisecond, 12, 400},
	} {
		r := sender.AdmitRequest{Host: tc.host}
		warm(t, l, r, tc.lat)
		l.mu.Lock()
		h := l.host(r.Host, clock.now())
		h.waiters = make([]chan struct{}, tc.may-1)
		wait, ok := l.mayWait(h, clock.now())
		h.waiters = append(h.waiters, nil)
		_, okPast := l.mayWait(h, clock.now())
		h.waiters = nil
		l.mu.Unlock()
		if !ok || wait != time.Duration(tc.wait)*time.Millisecond || okPast {
			t.Errorf("%s: waiter %d may wait %v (%v), the next %v; want %d ms, then refused",
				tc.host, tc.may, wait, ok, okPast, tc.wait)
		}
	}
}

// The buffer beyond MaxWaiting is a fast host's alone: with the shared
// buffer full, a fast host's request may still wait (it is served within
// 100 ms), a slow host's is refused, so the handlers the worker keeps for
// requests in flight stay free for other hosts.
func TestOnlyAFastHostWaitsBeyondTheBuffer(t *testing.T) {
	clock := newClock()
	l, _ := New(Config{MaxInflight: 2, Fixed: true, MaxWaiting: 4, FastWaiting: 10, MaxWait: time.Second, Now: clock.now})
	for _, tc := range []struct {
		host    string
		lat     time.Duration
		waiting int  // already waiting in the whole limiter
		may     bool // another may wait
	}{
		{"fast.example:443", time.Millisecond, 4, true},
		{"fast.example:443", time.Millisecond, 14, false},
		{"slow.example:443", 50 * time.Millisecond, 3, true},
		{"slow.example:443", 50 * time.Millisecond, 4, false},
	} {
		r := sender.AdmitRequest{Host: tc.host}
		warm(t, l, r, tc.lat)
		l.mu.Lock()
		h := l.host(r.Host, clock.now())
		l.waiting = tc.waiting
		_, ok := l.mayWait(h, clock.now())
		l.waiting = 0
		l.mu.Unlock()
		if ok != tc.may {
			t.Errorf("%s with %d waiting: may wait %v, want %v", tc.host, tc.waiting, ok, tc.may)
		}
	}
}
