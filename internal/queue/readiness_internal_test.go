package queue

import (
	"testing"
	"time"
)

// The refused share is taken over windows of shareWindow decisions: the
// first decisions give it at once, a full window replaces it, and a
// partial window after a full one leaves it. Deferrals for want of this
// worker's own room are not refusals, and are parked until due.
func TestReadinessShareAndParked(t *testing.T) {
	var r readiness
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	if got := r.refusedShare(); got != 0 {
		t.Fatalf("no decision: share %v, want 0", got)
	}
	r.decided(Decision{Action: NakAfter}, clock)
	r.decided(Decision{Action: AckWithResult}, clock)
	if got := r.refusedShare(); got != 0.5 {
		t.Fatalf("1 refused of 2: share %v, want 0.5", got)
	}
	for range shareWindow - 2 {
		r.decided(Decision{Action: NakAfter}, clock)
	}
	r.decided(Decision{Action: HandBack}, clock) // says nothing of the host
	if got, want := r.refusedShare(), float64(shareWindow-1)/shareWindow; got != want {
		t.Fatalf("%d refused of %d: share %v, want %v", shareWindow-1, shareWindow, got, want)
	}
	for range shareWindow - 1 {
		r.decided(Decision{Action: NakAfterAttempt}, clock) // a retry: the host answered
	}
	if got, want := r.refusedShare(), float64(shareWindow-1)/shareWindow; got != want {
		t.Fatalf("partial window after a full one: share %v, want it kept at %v", got, want)
	}
	r.decided(Decision{Action: NakAfter, OwnCapacity: true, Delay: 2 * time.Second}, clock)
	if got := r.refusedShare(); got != 0 {
		t.Fatalf("a window of retries and a deferral for want of room: share %v, want 0", got)
	}
	r.decided(Decision{Action: NakAfter, OwnCapacity: true, Delay: time.Second}, clock)
	if got := r.parkedNow(now); got != 2 {
		t.Fatalf("parked %d, want 2", got)
	}
	if got := r.parkedNow(now.Add(time.Second)); got != 1 {
		t.Fatalf("one due: parked %d, want 1", got)
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
	l := LaneReadiness{Undelivered: 40, Fetched: 4, Parked: 3, RefusedShare: 0.75}
	if got := l.ReadyUndelivered(); got != 10 {
		t.Errorf("ReadyUndelivered %v, want 10", got)
	}
	if got := l.ReadyHeld(); got != 4 {
		t.Errorf("ReadyHeld %v, want 1 fetched + 3 parked", got)
	}
}
