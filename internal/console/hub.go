package console

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// hub computes one snapshot per tick and fans it out to every viewer. It
// ticks only while someone watches: the first subscriber starts the loop,
// the last one to leave stops it, so an unwatched console costs nothing.
type hub struct {
	read  func(context.Context) Snapshot
	every time.Duration
	// after stands in for time.After (tests tick by hand).
	after func(time.Duration) <-chan time.Time
	// onError is told when a snapshot cannot be encoded.
	onError func(error)

	mu      sync.Mutex
	subs    map[chan []byte]struct{}
	stop    context.CancelFunc // of the running loop; nil when idle
	stopped chan struct{}      // closed when that loop has returned
	last    []byte             // the running loop's latest snapshot
}

func newHub(read func(context.Context) Snapshot, every time.Duration) *hub {
	return &hub{read: read, every: every, after: time.After, onError: func(error) {}, subs: map[chan []byte]struct{}{}}
}

// subscribe returns a channel that always holds the latest snapshot not
// yet taken (a slow viewer skips ticks, never blocks the others), and the
// function that ends the subscription.
func (h *hub) subscribe() (<-chan []byte, func()) {
	ch := make(chan []byte, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[ch] = struct{}{}
	if h.last != nil {
		ch <- h.last
	}
	if h.stop == nil {
		// A loop that is still ending was cancelled; the new one waits
		// for it so two never read at once.
		prev := h.stopped
		ctx, cancel := context.WithCancel(context.Background())
		h.stop, h.stopped = cancel, make(chan struct{})
		go h.loop(ctx, prev, h.stopped)
	}
	return ch, func() { h.unsubscribe(ch) }
}

func (h *hub) unsubscribe(ch chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; !ok {
		return
	}
	delete(h.subs, ch)
	if len(h.subs) == 0 && h.stop != nil {
		h.stop()
		h.stop, h.last = nil, nil
	}
}

// loop reads and publishes a snapshot, then waits a tick, until ctx ends.
func (h *hub) loop(ctx context.Context, prev <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	if prev != nil {
		<-prev
	}
	for ctx.Err() == nil {
		snap := h.read(ctx)
		if ctx.Err() != nil {
			return
		}
		b, err := json.Marshal(snap)
		if err != nil {
			h.onError(err)
		} else {
			h.publish(ctx, b)
		}
		select {
		case <-ctx.Done():
			return
		case <-h.after(h.every):
		}
	}
}

// publish hands b to every subscriber, replacing a snapshot not yet taken.
func (h *hub) publish(ctx context.Context, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ctx.Err() != nil {
		return // the loop was stopped: its snapshot must not outlive it
	}
	h.last = b
	for ch := range h.subs {
		select {
		case <-ch:
		default:
		}
		ch <- b
	}
}

// idle waits until no loop runs (tests; Close).
func (h *hub) idle() {
	h.mu.Lock()
	done := h.stopped
	h.mu.Unlock()
	if done != nil {
		<-done
	}
}
