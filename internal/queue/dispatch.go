package queue

import (
	"container/heap"
	"context"
	"slices"
	"sync"
	"time"
)

// Fair dispatch. Every lane with fetched jobs competes for this worker's
// request places (MaxInflight) by stride scheduling: a lane's virtual time
// (pass) grows by strideUnit/weight with each place it gets, and a freed
// place goes to the ready lane with the smallest pass. Over any stretch
// where k lanes stay backlogged, each gets places in proportion to its
// weight, within one place. A lane that comes back from idle starts at the
// current minimum pass: being idle earns no credit. A lone lane gets every
// place, as the single shared consumer did.
//
// Pulls follow the same shares: the window (MaxInflight running plus
// Prefetch waiting) is split between the active lanes by weight, each
// pulls when a good part of its quota is free (half the prefetch for a
// lone lane, as before), and when the window is short the lanes with the
// smallest pass pull first.

const (
	// strideUnit makes strides integers: strideUnit/weight for weights
	// up to MaxWeight.
	strideUnit = 1 << 20
	// maxColdPulls bounds the long pulls waiting on lanes that had nothing
	// to deliver at once (their jobs deferred, or handled by other
	// workers): at most maxColdPulls per cold wait, however many lanes.
	maxColdPulls = 64
	// drainBatch is how many deliveries of a cancelled lane one pull asks
	// for; drainWindow bounds those settling at once, outside the window.
	drainBatch  = 64
	drainWindow = 256
)

// pullKind says what a pull asks for and what it holds.
type pullKind int

const (
	// pullHot asks for part of the lane's quota, holding that much of the
	// window until it ends (within PullWait).
	pullHot pullKind = iota
	// pullCold asks a lane with nothing ready for one job and waits long
	// for it (coldWait), outside the window: a deferred job coming due, or
	// a job published later, arrives at once.
	pullCold
	// pullDrain takes a cancelled lane's jobs, outside the window.
	pullDrain
)

// sched is the dispatcher's state; Consumer.mu guards it.
type sched struct {
	lanes    map[string]*lane // by job subject
	ready    laneHeap         // running lanes with fetched jobs, by pass
	places   int              // free request places
	out      int              // fetched and not settled, in the window
	reserved int              // asked for by hot pulls under way
	drainOut int              // of cancelled lanes, outside the window
	cold     int              // cold pulls under way
	vt       uint64           // pass of the latest dispatch
	nextID   uint64
	stopping bool
	wake     chan struct{}
	// handlers counts every goroutine holding a delivery; pulls every
	// pull under way.
	handlers sync.WaitGroup
	// placedq feeds the idle placers (placers.go).
	placedq    chan *Delivery // unbuffered: only an idle placer takes one
	pulls      sync.WaitGroup
	work       context.Context // settling's context (ends after the grace)
	creating   chan struct{}   // bounds the lane consumers created at once
	lastForget time.Time
	lastSweep  time.Time
	// pullCtx ends the cold pulls when Run stops.
	pullCtx   context.Context
	stopPulls context.CancelFunc
}

func (c *Consumer) startSched(work context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.work = work
	c.lanes = map[string]*lane{}
	c.places = c.cfg.MaxInflight
	c.placedq = make(chan *Delivery)
	c.wake = make(chan struct{}, 1)
	c.creating = make(chan struct{}, maxCreating)
	c.pullCtx, c.stopPulls = context.WithCancel(context.Background())
}

// signal wakes the dispatch loop.
func (c *Consumer) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Consumer) window() int { return c.cfg.MaxInflight + c.cfg.Prefetch }

// dispatchLoop gives free places to ready lanes and starts the pulls that
// keep them ready, until ctx ends; then it hands back what has not
// started and waits for the pulls under way.
func (c *Consumer) dispatchLoop(ctx, work context.Context, h Handler) {
	for {
		c.mu.Lock()
		if ctx.Err() != nil {
			c.stopLocked(work)
			c.mu.Unlock()
			break
		}
		c.dispatchLocked(work, h)
		c.planPullsLocked()
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-ctx.Done():
		}
	}
	c.pulls.Wait()
}

// dispatchLocked starts a handler for each free place, taking the job of
// the ready lane with the smallest pass.
func (c *Consumer) dispatchLocked(work context.Context, h Handler) {
	for c.places > 0 && c.ready.Len() > 0 {
		l := c.ready.lanes[0]
		d := l.pop()
		c.vt = l.pass
		l.pass += strideUnit / uint64(l.ctl.Weight)
		if len(l.ready) == 0 {
			heap.Pop(&c.ready)
		} else {
			heap.Fix(&c.ready, 0)
		}
		c.places--
		d.halt = l.halt
		l.running++
		l.placed++
		d.placed = true
		c.placeLocked(work, d, h)
	}
}

// runPlaced handles a delivery in a request place and settles it.
func (c *Consumer) runPlaced(ctx context.Context, d *Delivery, h Handler) {
	defer c.handlers.Done()
	l := d.lane
	// The place bounds requests to targets; storing the result and the
	// ack need only the broker, so they run outside it.
	c.process(ctx, d, h, func() {
		c.mu.Lock()
		c.places++
		l.running--
		c.mu.Unlock()
		c.signal()
	})
	c.settled(d)
}

// settled ends a delivery's hold on the window and its lane.
func (c *Consumer) settled(d *Delivery) {
	c.holds.release(d.Seq, d.due, d.last)
	c.mu.Lock()
	l := d.lane
	l.out--
	if d.placed {
		l.placed--
	}
	if d.drain {
		c.drainOut--
	} else {
		c.out--
	}
	c.dropIfDoneLocked(l)
	c.mu.Unlock()
	c.signal()
}

// stopLocked stops pulling and hands back every job not started.
func (c *Consumer) stopLocked(work context.Context) {
	c.stopping = true
	c.stopPulls()
	for _, l := range c.lanes {
		c.unreadyLocked(l)
		for _, d := range l.takeReady() {
			c.spawnLocked(work, d, handBack)
		}
	}
}

// laneFate is what happens to a delivery that will not get a place.
type laneFate int

const (
	handBack laneFate = iota // Nak: another worker, or later, takes it
	cancelIt                 // settled with a cancelled result
)

// spawnLocked settles d apart from the places: handed back, or cancelled.
func (c *Consumer) spawnLocked(work context.Context, d *Delivery, f laneFate) {
	c.handlers.Add(1)
	go func() {
		defer c.handlers.Done()
		if f == cancelIt {
			c.process(work, d, c.cancelHandler, func() {})
		} else {
			c.settle(work, d, Decision{Action: HandBack})
		}
		c.settled(d)
	}()
}

// planPullsLocked starts the pulls the lanes need: cancelled lanes drain,
// cold lanes wait long for one job, running lanes refill their quota of
// the window, smallest pass first when it is short.
func (c *Consumer) planPullsLocked() {
	if c.stopping {
		return
	}
	window := c.window()
	sumW := c.activeWeightLocked()
	now := time.Now()
	var hot []*lane
	for _, l := range c.lanes {
		if l.cons == nil || l.pulling || l.gone || now.Before(l.retryAt) {
			continue
		}
		switch {
		case l.ctl.State == BatchPaused:
		case l.cold:
			if c.cold < maxColdPulls {
				c.startPullLocked(l, 1, pullCold)
			}
		case l.ctl.State == BatchCancelled:
			if n := min(drainBatch-l.out, drainWindow-c.drainOut); n >= drainBatch/2 {
				c.startPullLocked(l, n, pullDrain)
			}
		default:
			hot = append(hot, l)
		}
	}
	if len(hot) > 1 && window-c.out-c.reserved > 0 { // no room: nothing to order
		slices.SortFunc(hot, func(a, b *lane) int {
			if a.pass != b.pass {
				return cmpU64(a.pass, b.pass)
			}
			return cmpU64(a.id, b.id)
		})
	}
	for _, l := range hot {
		q := quota(window, l.ctl.Weight, sumW)
		n := min(q-l.out, window-c.out-c.reserved)
		if n >= refill(q, c.cfg.Prefetch, window) {
			c.startPullLocked(l, n, pullHot)
		}
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// activeWeightLocked is the sum of the weights of the running lanes that
// have jobs to offer: the denominator of every share.
func (c *Consumer) activeWeightLocked() int {
	sum := 0
	for _, l := range c.lanes {
		if l.active() {
			sum += l.ctl.Weight
		}
	}
	return sum
}

// quota is a lane's part of the window: its weight's share, at least one.
func quota(window, weight, sumWeights int) int {
	if sumWeights <= weight {
		return window
	}
	return max(1, window*weight/sumWeights)
}

// refill is how much of its quota must be free before a lane pulls: half
// the prefetch for a lone lane (pulls are batched, and the refill arrives
// before the places run dry), proportionally less for a smaller quota.
func refill(quota, prefetch, window int) int {
	return max(1, quota*prefetch/(2*window))
}

// laneHeap orders the ready lanes by pass, then by age.
type laneHeap struct{ lanes []*lane }

func (h *laneHeap) Len() int { return len(h.lanes) }
func (h *laneHeap) Less(i, j int) bool {
	a, b := h.lanes[i], h.lanes[j]
	if a.pass != b.pass {
		return a.pass < b.pass
	}
	return a.id < b.id
}
func (h *laneHeap) Swap(i, j int) {
	h.lanes[i], h.lanes[j] = h.lanes[j], h.lanes[i]
	h.lanes[i].at, h.lanes[j].at = i, j
}
func (h *laneHeap) Push(x any) {
	l := x.(*lane)
	l.at = len(h.lanes)
	h.lanes = append(h.lanes, l)
}
func (h *laneHeap) Pop() any {
	n := len(h.lanes) - 1
	l := h.lanes[n]
	h.lanes[n] = nil
	h.lanes = h.lanes[:n]
	l.at = -1
	return l
}

// readyLocked offers a lane's fetched jobs to the places. A lane coming
// back from idle starts at the current minimum pass.
func (c *Consumer) readyLocked(l *lane) {
	if l.at >= 0 || len(l.ready) == 0 || l.ctl.State != BatchRunning || c.stopping {
		return
	}
	if l.idle {
		floor := c.vt
		if c.ready.Len() > 0 {
			floor = c.ready.lanes[0].pass
		}
		l.pass = max(l.pass, floor)
		l.idle = false
	}
	heap.Push(&c.ready, l)
}

// unreadyLocked withdraws a lane from the places.
func (c *Consumer) unreadyLocked(l *lane) {
	if l.at >= 0 {
		heap.Remove(&c.ready, l.at)
	}
}

// LaneStat is what a worker does for one batch now.
type LaneStat struct {
	Batch   string
	Weight  int
	State   BatchState
	Share   float64 // of this worker's places, while the active lanes stay
	Running int     // given a place, not settled
	Ready   int     // fetched, waiting for a place
}

// Lanes describes every lane, for metrics.
func (c *Consumer) Lanes() []LaneStat {
	c.mu.Lock()
	defer c.mu.Unlock()
	sum := c.activeWeightLocked()
	out := make([]LaneStat, 0, len(c.lanes))
	for _, l := range c.lanes {
		s := LaneStat{Batch: l.batch, Weight: l.ctl.Weight, State: l.ctl.State, Running: l.placed, Ready: len(l.ready)}
		if l.active() && sum > 0 {
			s.Share = float64(l.ctl.Weight) / float64(sum)
		}
		out = append(out, s)
	}
	return out
}
