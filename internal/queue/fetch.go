package queue

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// coldWait is how long a cold pull waits for one job: long, since a lane
// may wait this long for a turn when more than maxColdPulls are cold, but
// within a shutdown's patience (it is cancelled then anyway).
func (c *Consumer) coldWait() time.Duration {
	return min(max(10*c.cfg.PullWait, time.Second), 5*time.Second)
}

// startPullLocked starts one pull of n jobs for the lane.
func (c *Consumer) startPullLocked(l *lane, n int, kind pullKind) {
	l.pulling = true
	ctx, cancel := c.pullCtx, context.CancelFunc(func() {})
	switch kind {
	case pullHot:
		l.asked = n
		c.reserved += n
	case pullCold:
		c.cold++
		ctx, cancel = context.WithTimeout(c.pullCtx, c.coldWait())
		l.cancelPull = cancel
	}
	c.pulls.Add(1)
	go c.pull(ctx, cancel, l, l.cons, n, kind)
}

// pull fetches up to n jobs from the lane's consumer and offers each as it
// arrives. A pull the server never ended, failed pulls, and the first pull
// that works after failures start a rescue (rescue.go).
func (c *Consumer) pull(ctx context.Context, cancel context.CancelFunc, l *lane, cons jetstream.Consumer, n int, kind pullKind) {
	defer c.pulls.Done()
	defer cancel()
	opt := jetstream.FetchMaxWait(c.cfg.PullWait)
	if kind == pullCold {
		opt = jetstream.FetchContext(ctx)
	}
	began, got, pending := time.Now(), 0, uint64(0)
	var batch jetstream.MessageBatch
	var err error
	expect := c.cfg.PullWait // the server ends the pull by then
	if kind == pullHot {
		// What the lane can deliver now, no wait: a hot pull holds part
		// of the window, and one on a lane whose jobs are all in other
		// workers' hands would hold it for nothing. A lane that had
		// nothing turns cold (one long pull outside the window).
		batch, err = cons.FetchNoWait(n)
		expect = 0
	} else {
		batch, err = cons.Fetch(n, opt)
	}
	if err == nil {
		got, pending = c.receive(l, batch.Messages(), kind)
		err = batch.Error()
	}
	if kind != pullCold && err == nil && got == 0 && time.Since(began) > expect+900*time.Millisecond {
		// The server answers every pull by its expiry; only the client's
		// own timer (a second past it) ended this one: the consumer's
		// leader went away.
		c.rescueSoon()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	c.pullDone(l, kind, got, pending, err)
}

// receive offers a pull's deliveries as they arrive; those that must be
// looked up first wait for the burst they came in (checkEarly). It returns
// how many came and the undelivered count the last one carried.
func (c *Consumer) receive(l *lane, msgs <-chan jetstream.Msg, kind pullKind) (got int, pending uint64) {
	var early []*Delivery
	flush := func() {
		c.checkEarly(c.work, early)
		for _, d := range early {
			c.offer(l, d, kind)
		}
		early = early[:0]
	}
	for {
		var msg jetstream.Msg
		var ok bool
		select {
		case msg, ok = <-msgs:
		default:
			flush() // the burst is in
			msg, ok = <-msgs
		}
		if !ok {
			flush()
			return got, pending
		}
		d := c.accept(l, msg)
		got++
		pending = d.pending
		if !d.needsCheck() {
			c.offer(l, d, kind)
			continue
		}
		if early = append(early, d); len(early) == MaxDoneLookup {
			flush()
		}
	}
}

// offer makes a fetched delivery the lane's: ready for a place, handed
// back (paused, or stopping) or cancelled.
func (c *Consumer) offer(l *lane, d *Delivery, kind pullKind) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if kind == pullHot && l.asked > 0 {
		l.asked--
		c.reserved--
		if d.pending == 0 {
			// The consumer has nothing more to deliver: the rest of this
			// pull's reservation would hold places from the other lanes
			// until the pull expires.
			c.reserved -= l.asked
			l.asked = 0
		}
	}
	l.out++
	// What the lane has undelivered is what this delivery says: counted
	// as fetched now, it must not count as undelivered too until the
	// pull ends (readiness).
	l.seen.pending = d.pending
	d.drain = l.ctl.State == BatchCancelled && !c.stopping
	if d.drain {
		c.drainOut++
	} else {
		c.out++
	}
	switch {
	case c.stopping || l.ctl.State == BatchPaused:
		c.spawnLocked(c.work, d, handBack)
	case d.drain:
		c.spawnLocked(c.work, d, cancelIt)
	default:
		l.ready = append(l.ready, d)
		c.readyLocked(l)
		c.signal()
	}
}

// pullDone ends a pull: a lane whose pull found nothing to deliver at once
// turns cold (one long pull at a time, outside the window); a failed one
// waits, and a lost consumer is created again.
func (c *Consumer) pullDone(l *lane, kind pullKind, got int, pending uint64, err error) {
	c.mu.Lock()
	defer c.signal()
	defer c.mu.Unlock()
	l.pulling = false
	switch kind {
	case pullHot:
		c.reserved -= l.asked
		l.asked = 0
	case pullCold:
		c.cold--
		l.cancelPull = nil
	}
	if err != nil {
		if IsNotFound(err) || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, nats.ErrNoResponders) {
			// The server lost the consumer (a cancel or another worker
			// deleted it: nobody answers its pulls; it expired, or the
			// server restarted without its store):
			// create it again. Its successor delivers every job again,
			// so there is nothing for a rescue to find; unless it is the
			// same consumer, only out of reach while its leader changed
			// (createLaneLocked then starts a rescue).
			c.log.Debug().Err(err).Str("batch", l.batch).Msg("a batch's consumer is gone; creating it again")
			l.failures = 0
			l.cons = nil
			if !l.gone && !c.stopping {
				c.createLaneLocked(c.pullCtx, l)
			}
			c.dropIfDoneLocked(l)
			return
		}
		c.consuming.Store(false)
		l.failures++
		c.retryLocked(l, brokerPause(l.failures))
		c.log.Warn().Err(err).Str("batch", l.batch).Int("failures", l.failures).Msg("pulling jobs failed; retrying")
		c.dropIfDoneLocked(l)
		return
	}
	if l.failures > 0 {
		// Pulls failed, most often because the consumer's leader was lost
		// or changed: deliveries may have gone with it.
		c.rescueSoon()
	}
	l.failures = 0
	c.consuming.Store(true)
	l.seen.pulled(got, pending, c.now())
	// Nothing delivered, or the last job delivered said none is left
	// undelivered: what remains is pending elsewhere or deferred.
	l.cold = got == 0 || pending == 0
	if l.cold && len(l.ready) == 0 {
		l.idle = true
	}
	c.dropIfDoneLocked(l)
}

// retryLocked keeps the lane from pulling for pause, and wakes the loop
// once it may again.
func (c *Consumer) retryLocked(l *lane, pause time.Duration) {
	l.retryAt = time.Now().Add(pause)
	time.AfterFunc(pause, c.signal)
}

// accept wraps a fetched message and starts keeping it alive: its ack timer
// runs from the moment the server sent it, whether it waits for a slot or
// runs a long request.
func (c *Consumer) accept(l *lane, msg jetstream.Msg) *Delivery {
	d := &Delivery{msg: msg, lane: l, c: c}
	var stored time.Time
	if md, err := msg.Metadata(); err == nil {
		d.NumDelivered = md.NumDelivered
		d.Seq = md.Sequence.Stream
		d.pending = md.NumPending
		stored = md.Timestamp
		d.stored = stored
		d.early = stored.Before(l.created.Add(earlySkew))
	}
	d.Job, d.decodeErr = c.inbound(msg, stored)
	if d.decodeErr == nil && d.Job.Kind != job.KindCallback { // a callback message is keyed by its job's result
		d.fp = c.names.Fingerprint(d.Job)
	}
	d.consumer = l.created
	// A first delivery of a job stored after its consumer was created
	// had no earlier one: its counts are zero.
	d.countsKnown = d.Seq > 0 && d.NumDelivered == 1 && !d.early
	if last, ok := c.holds.hold(d.Seq, l.name); ok {
		d.recall(last)
	}
	d.keepalive = startKeepalive(msg, c.cfg.AckWait/3)
	return d
}

// keepalive tells the server a message is still being worked on, every
// interval until stopped.
type keepalive struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func startKeepalive(msg jetstream.Msg, every time.Duration) *keepalive {
	k := &keepalive{}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.t = time.AfterFunc(every, func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.stopped {
			return
		}
		_ = msg.InProgress()
		k.t.Reset(every)
	})
	return k
}

func (k *keepalive) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	k.t.Stop()
}
