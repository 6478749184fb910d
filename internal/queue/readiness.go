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
	share   float64   // refused share of the last full window
	full    bool      // share is of a full window

	// parked holds the due times of the lane's jobs this worker deferred
	// for want of its own room (Decision.OwnCapacity): ready, but waiting
	// in JetStream, where no count shows them.
	mu     sync.Mutex
	parked []time.Time
}

// decided records a handler's decision on one of the lane's jobs.
func (r *readiness) decided(dec Decision, now func() time.Time) {
	switch {
	case dec.Action == NakAfter && !dec.OwnCapacity:
		r.decisions.Add(refusedOne)
	case dec.Action == NakAfter:
		r.decisions.Add(decidedOne)
		r.mu.Lock()
		r.parked = append(r.parked, now().Add(dec.Delay))
		r.mu.Unlock()
	case dec.Action != HandBack:
		r.decisions.Add(decidedOne)
	}
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

// refusedShare is the share of the lane's recent decisions that were
// refusals: over the decisions since the last full window once
// shareWindow of them came, over those so far until the first did.
func (r *readiness) refusedShare() float64 {
	cur := r.decisions.Load()
	total := uint32(cur) - uint32(r.base)
	refused := uint32(cur>>32) - uint32(r.base>>32)
	switch {
	case total >= shareWindow:
		r.share, r.full, r.base = float64(refused)/float64(total), true, cur
	case total > 0 && !r.full:
		r.share = float64(refused) / float64(total)
	}
	return min(r.share, 1)
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
	// RefusedShare is the share of this worker's recent decisions on the
	// batch's jobs that deferred them because their host refused (breaker
	// open, host or rate limit).
	RefusedShare float64
}

// ReadyUndelivered estimates the undelivered jobs whose host would take
// them now.
func (r LaneReadiness) ReadyUndelivered() float64 {
	return float64(r.Undelivered) * (1 - r.RefusedShare)
}

// ReadyHeld estimates the jobs this worker holds or parked whose host
// would take them now.
func (r LaneReadiness) ReadyHeld() float64 {
	return float64(r.Fetched)*(1-r.RefusedShare) + float64(r.Parked)
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
		r := LaneReadiness{Batch: l.batch, State: l.ctl.State, RefusedShare: l.seen.refusedShare()}
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
