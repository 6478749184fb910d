package queue

import (
	"testing"
	"time"
)

// The refused share is taken over windows of shareWindow decisions: the
// first decisions give it at once, a full window replaces it, and a
// partial window after a full one leaves it. Deferrals for want of this
// worker's own room are not refusals, and are parked until due. Without
// decisions there is no share at all (not a share of 0).
func TestReadinessShareAndParked(t *testing.T) {
	var r readiness
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	share := func() float64 {
		t.Helper()
		s, ok := r.window().Share()
		if !ok {
			t.Fatal("no share after decisions")
		}
		return s
	}
	if w := r.window(); w != (Window{}) {
		t.Fatalf("no decision: window %+v, want empty", w)
	}
	if _, ok := r.window().Share(); ok {
		t.Fatal("no decision: a share, want none")
	}
	r.decidedOn(Decision{Action: NakAfter}, 1, clock)
	r.decidedOn(Decision{Action: AckWithResult}, 1, clock)
	if got := share(); got != 0.5 {
		t.Fatalf("1 refused of 2: share %v, want 0.5", got)
	}
	for range shareWindow - 2 {
		r.decidedOn(Decision{Action: NakAfter}, 1, clock)
	}
	r.decidedOn(Decision{Action: HandBack}, 1, clock) // says nothing of the host
	if got, want := r.window(), (Window{Refused: shareWindow - 1, Decided: shareWindow}); got != want {
		t.Fatalf("window %+v, want %+v", got, want)
	}
	for range shareWindow - 1 {
		r.decidedOn(Decision{Action: NakAfterAttempt}, 1, clock) // a retry: the host answered
	}
	if got, want := share(), float64(shareWindow-1)/shareWindow; got != want {
		t.Fatalf("partial window after a full one: share %v, want it kept at %v", got, want)
	}
	r.decidedOn(Decision{Action: NakAfter, OwnCapacity: true, Delay: 2 * time.Second}, 1, clock)
	if got := share(); got != 0 {
		t.Fatalf("a window of retries and a deferral for want of room: share %v, want 0", got)
	}
	r.decidedOn(Decision{Action: NakAfter, OwnCapacity: true, Delay: time.Second}, 3, clock)
	if got := r.parkedNow(now); got != 2 {
		t.Fatalf("parked %d, want 2 (a repeat delivery's deferral parks too)", got)
	}
	if got := r.parkedNow(now.Add(time.Second)); got != 1 {
		t.Fatalf("one due: parked %d, want 1", got)
	}
}

// A batch half on a host whose breaker is open and half on a healthy one:
// the broken host's jobs come back and are refused again and again, yet
// half the undelivered jobs are ready. Only first deliveries count, so the
// share stays at one half (counting every delivery gave 0.86 here).
func TestReadinessShareCountsFirstDeliveriesOnly(t *testing.T) {
	var r readiness
	clock := func() time.Time { return time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC) }
	const each = shareWindow / 2
	for range each {
		r.decidedOn(Decision{Action: NakAfter}, 1, clock)      // host A refuses
		r.decidedOn(Decision{Action: AckWithResult}, 1, clock) // host B sends
	}
	for delivery := uint64(2); delivery <= 6; delivery++ {
		for range each {
			r.decidedOn(Decision{Action: NakAfter}, delivery, clock) // A's jobs again
		}
	}
	w := r.window()
	if share, _ := w.Share(); share != 0.5 {
		t.Fatalf("window %+v: share %v, want 0.5", w, share)
	}
	l := LaneReadiness{Undelivered: 1000, Window: w}
	if got := l.RefusedShare(); got != 0.5 {
		t.Errorf("RefusedShare %v, want 0.5", got)
	}
}

// Parked due times are forgotten when due on append once maxParked of them
// are kept, not only when /metrics is read: a worker nobody scrapes keeps
// at most maxParked plus those not due.
func TestReadinessParkedIsBounded(t *testing.T) {
	var r readiness
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	for range 5 * maxParked {
		r.decidedOn(Decision{Action: NakAfter, OwnCapacity: true, Delay: 2 * time.Second}, 1, clock)
		now = now.Add(time.Second)
	}
	if len(r.parked) > maxParked+2 {
		t.Fatalf("%d due times kept after %d deferrals, want at most %d", len(r.parked), 5*maxParked, maxParked+2)
	}
	if got := r.parkedNow(now); got != 1 {
		t.Errorf("parked %d, want 1 (the last, due in a second)", got)
	}
}

// The undelivered count a pull leaves: the last delivery's, or none when
// nothing came.
func TestReadinessPulled(t *testing.T) {
	var r readiness
	at := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	r.pulled(3, 40, at)
	if r.pending != 40 || !r.seenAt.Equal(at) {
		t.Fatalf("pending %d at %v, want 40 at %v", r.pending, r.seenAt, at)
	}
	r.pulled(0, 40, at)
	if r.pending != 0 {
		t.Fatalf("an empty pull: pending %d, want 0", r.pending)
	}
	l := LaneReadiness{Undelivered: 40, Fetched: 4, Parked: 3, Window: Window{Refused: 3, Decided: 4}}
	if got := l.ReadyHeld(); got != 4 {
		t.Errorf("ReadyHeld %v, want 1 fetched + 3 parked", got)
	}
}
