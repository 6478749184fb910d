package queue

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Readiness: how many of a batch's jobs could be sent now if there were
// more workers, for an autoscaler. A lane's consumer counts its undelivered
// jobs (num_pending), and every delivery carries that count, so the figure
// is kept from the pulls a lane makes anyway; only a lane no pull looked
// at for readinessStale is asked (one consumer info, at read time).
// Undelivered jobs whose host refuses (breaker open, host or rate limit)
// are not ready, but nothing says which they are before they are fetched:
// they are estimated by the share of the lane's recent decisions that were
// deferrals without an attempt (NakAfter) for the host's sake, not for
// want of this worker's own room (Decision.OwnCapacity). Jobs deferred for
// want of room are ready: each worker counts its own until they are due.

const (
	// readinessStale is how old a lane's undelivered count may be before a
	// reading asks its consumer.
	readinessStale = 5 * time.Second
	// maxReadinessInfos bounds the consumer infos one reading asks for;
	// the others wait for the next reading.
	maxReadinessInfos = 16
	// readinessInfoWait bounds them, well within a scrape's timeout.
	readinessInfoWait = 2 * time.Second
	// shareWindow is how many decisions the refused share is taken over:
	// a reading with fewer since the last window keeps the last share.
	shareWindow = 20
	// refusedOne and decidedOne are what one decision adds to
	// readiness.decisions: refused ones count in the high half.
	refusedOne = 1<<32 + 1
	decidedOne = 1
	// maxParked is how many parked due times a lane keeps before an append
	// forgets those already due; past it, each append costs one pass.
	maxParked = 1024
)

// readiness is what a lane knows of its jobs' readiness.
type readiness struct {
	// decisions counts the handler decisions on the lane's jobs in its low
	// 32 bits and the refused ones in its high 32 bits: one atomic add per
	// job. Differences are taken per half, wrapping.
	decisions atomic.Uint64

	// Guarded by Consumer.mu.
	pending uint64    // undelivered, as the server last said
	seenAt  time.Time // when it said so; zero: never
	base    uint64    // decisions when the share's window began
	win     Window    // the last full window, or the decisions so far
	full    bool      // win is a full window

	// parked holds the due times of the lane's jobs this worker deferred
	// for want of its own room (Decision.OwnCapacity): ready, but waiting
	// in JetStream, where no count shows them.
	mu     sync.Mutex
	parked []time.Time
}

// Window is a count of decisions on a lane's jobs and of the refusals
// among them. Windows of several workers add up: their sum gives the
// fleet's refused share, where each worker's own share would differ.
type Window struct {
	Refused, Decided uint32
}

// Share is the refused share of the window; ok is false without decisions.
func (w Window) Share() (share float64, ok bool) {
	if w.Decided == 0 {
		return 0, false
	}
	return min(float64(w.Refused)/float64(w.Decided), 1), true
}

// decidedOn records a handler's decision on a delivery of one of the lane's
// jobs. Only a job's first delivery counts towards the share: the share
// estimates the undelivered jobs, and a refused job comes back to be
// refused again, so its repeats would weigh its host once per delivery.
func (r *readiness) decidedOn(dec Decision, numDelivered uint64, now func() time.Time) {
	if dec.Action == NakAfter && dec.OwnCapacity {
		r.park(now().Add(dec.Delay), now())
	}
	if numDelivered > 1 || dec.Action == HandBack {
		return
	}
	if dec.Action == NakAfter && !dec.OwnCapacity {
		r.decisions.Add(refusedOne)
	} else {
		r.decisions.Add(decidedOne)
	}
}

// park records a job deferred for want of room until due; at maxParked it
// forgets those already due first, so the list stays bounded by the jobs
// really parked (or maxParked).
func (r *readiness) park(due, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.parked) >= maxParked {
		r.parked = slices.DeleteFunc(r.parked, func(d time.Time) bool { return !d.After(now) })
	}
	r.parked = append(r.parked, due)
}

// parkedNow counts the jobs deferred for want of room that are not due
// yet, forgetting the others.
func (r *readiness) parkedNow(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.parked = slices.DeleteFunc(r.parked, func(due time.Time) bool { return !due.After(now) })
	return len(r.parked)
}

// saw records the lane's undelivered count.
func (r *readiness) saw(pending uint64, at time.Time) {
	r.pending, r.seenAt = pending, at
}

// pulled records what a pull that worked said: the undelivered count its
// last delivery carried, or none deliverable now when nothing came.
func (r *readiness) pulled(got int, pending uint64, at time.Time) {
	if got == 0 {
		pending = 0
	}
	r.saw(pending, at)
}

// window is the lane's recent decisions: those since the last full window
// once shareWindow of them came, those so far until the first did.
func (r *readiness) window() Window {
	cur := r.decisions.Load()
	w := Window{Refused: uint32(cur>>32) - uint32(r.base>>32), Decided: uint32(cur) - uint32(r.base)}
	switch {
	case w.Decided >= shareWindow:
		r.win, r.full, r.base = w, true, cur
	case !r.full:
		r.win = w
	}
	return r.win
}

// LaneReadiness is one batch's readiness as this worker sees it.
type LaneReadiness struct {
	Batch string
	State BatchState
	// Undelivered is how many of the batch's jobs its consumer has not
	// delivered to any worker (num_pending): the same figure on every
	// worker. 0 unless the batch is running.
	Undelivered uint64
	// Fetched is how many this worker fetched and has not started
	// (waiting for one of its places). 0 unless the batch is running.
	Fetched int
	// Parked is how many this worker deferred for want of its own room
	// (its request places, a host limit at its ceiling) that are not due
	// yet: ready jobs waiting in JetStream. 0 unless the batch is running.
	Parked int
	// Window counts this worker's recent decisions on first deliveries of
	// the batch's jobs and the refusals among them (deferred because their
	// host refused: breaker open, host or rate limit). Sum it over workers
	// for the fleet's share.
	Window Window
}

// RefusedShare is the share of this worker's recent decisions that were
// refusals, 0 without decisions.
func (r LaneReadiness) RefusedShare() float64 {
	share, _ := r.Window.Share()
	return share
}

// ReadyHeld estimates the jobs this worker holds or parked whose host
// would take them now.
func (r LaneReadiness) ReadyHeld() float64 {
	return float64(r.Fetched)*(1-r.RefusedShare()) + float64(r.Parked)
}

// Readiness reads every lane's readiness. Lanes whose undelivered count is
// older than readinessStale have their consumer asked first (at most
// maxReadinessInfos per reading, oldest first, bounded by ctx).
func (c *Consumer) Readiness(ctx context.Context) []LaneReadiness {
	c.refreshPending(ctx)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]LaneReadiness, 0, len(c.lanes))
	for _, l := range c.lanes {
		r := LaneReadiness{Batch: l.batch, State: l.ctl.State, Window: l.seen.window()}
		parked := l.seen.parkedNow(now)
		if l.ctl.State == BatchRunning && l.cons != nil && !l.gone {
			r.Undelivered, r.Fetched, r.Parked = l.seen.pending, len(l.ready), parked
		}
		out = append(out, r)
	}
	return out
}

// refreshPending asks the consumers of the running lanes whose undelivered
// count is stale.
func (c *Consumer) refreshPending(ctx context.Context) {
	type stale struct {
		l    *lane
		cons jetstream.Consumer
		at   time.Time
	}
	now := c.now()
	var due []stale
	c.mu.Lock()
	for _, l := range c.lanes {
		if l.ctl.State == BatchRunning && l.cons != nil && !l.gone && now.Sub(l.seen.seenAt) >= readinessStale {
			due = append(due, stale{l, l.cons, l.seen.seenAt})
		}
	}
	c.mu.Unlock()
	slices.SortFunc(due, func(a, b stale) int { return a.at.Compare(b.at) })
	due = due[:min(len(due), maxReadinessInfos)]
	ctx, cancel := context.WithTimeout(ctx, readinessInfoWait)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range due {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := s.cons.Info(ctx)
			if err != nil {
				return // kept as it was; the next reading asks again
			}
			c.mu.Lock()
			if s.l.cons == s.cons && s.l.seen.seenAt.Equal(s.at) {
				s.l.seen.saw(info.NumPending, c.now())
			}
			c.mu.Unlock()
		}()
	}
	wg.Wait()
}

// sawCreated records the undelivered count a new lane consumer reported.
func (l *lane) sawCreated(cons jetstream.Consumer, at time.Time) {
	if info := cons.CachedInfo(); info != nil {
		l.seen.saw(info.NumPending, at)
	}
}
