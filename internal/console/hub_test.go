package console

import (
	"bytes"
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// countingRead is a snapshot source that counts its reads and numbers
// each snapshot by them.
type countingRead struct{ n atomic.Int64 }

func (c *countingRead) read(context.Context) Snapshot {
	return Snapshot{Lag: uint64(c.n.Add(1))}
}

func lagOf(t *testing.T, b []byte) uint64 {
	t.Helper()
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s.Lag
}

// Nobody watching: nothing is read. Two viewers: one read per tick, the
// same bytes to both. The last viewer gone: the loop ends and reads stop;
// a new viewer starts it again.
func TestHubReadsOncePerTickOnlyWhileWatched(t *testing.T) {
	var src countingRead
	ticks := make(chan time.Time)
	h := newHub(src.read, time.Second)
	h.after = func(time.Duration) <-chan time.Time { return ticks }
	if n := src.n.Load(); n != 0 {
		t.Fatalf("%d reads with nobody watching", n)
	}
	a, stopA := h.subscribe()
	first := <-a
	b, stopB := h.subscribe()
	if got := <-b; !bytes.Equal(got, first) {
		t.Errorf("a viewer who joins gets %s, the others have %s", got, first)
	}
	if lagOf(t, first) != 1 {
		t.Errorf("first snapshot is read %d, want 1", lagOf(t, first))
	}
	for tick := 2; tick <= 4; tick++ {
		ticks <- time.Time{}
		ga, gb := <-a, <-b
		if !bytes.Equal(ga, gb) || lagOf(t, ga) != uint64(tick) {
			t.Fatalf("tick %d: viewers got %s and %s", tick, ga, gb)
		}
	}
	stopA()
	stopB()
	stopB() // twice is harmless
	h.idle()
	reads := src.n.Load()
	if reads != 4 {
		t.Errorf("%d reads for 4 snapshots", reads)
	}
	c, stopC := h.subscribe()
	if got := lagOf(t, <-c); got != 5 {
		t.Errorf("a viewer after an idle spell gets read %d, want a fresh one (5)", got)
	}
	stopC()
	h.idle()
}

// A viewer who does not read holds back nobody: it keeps the latest
// snapshot only.
func TestHubSlowViewerSkipsTicks(t *testing.T) {
	var src countingRead
	ticks := make(chan time.Time)
	h := newHub(src.read, time.Second)
	h.after = func(time.Duration) <-chan time.Time { return ticks }
	slow, stopSlow := h.subscribe()
	fast, stopFast := h.subscribe()
	<-fast
	for range 3 {
		ticks <- time.Time{}
		<-fast
	}
	// The publish that reached fast holds the lock until it reached all.
	h.mu.Lock()
	last := h.last
	h.mu.Unlock()
	if got := lagOf(t, last); got != 4 {
		t.Errorf("the hub's latest snapshot is read %d, want 4", got)
	}
	if got := lagOf(t, <-slow); got != 4 {
		t.Errorf("the slow viewer's next snapshot is read %d, want the latest (4)", got)
	}
	stopSlow()
	stopFast()
	h.idle()
}

func TestWriteEventFraming(t *testing.T) {
	var b bytes.Buffer
	if err := writeEvent(&b, "snapshot", []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "event: snapshot\ndata: {\"a\":1}\n\n"; got != want {
		t.Errorf("framed %q, want %q", got, want)
	}
	if err := writeEvent(&b, "snapshot", []byte("{\n}")); err == nil {
		t.Error("data with a line break was framed; it would end the event early")
	}
}
