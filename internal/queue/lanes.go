package queue

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Lanes. Each batch's jobs are taken through a durable pull consumer of
// their own (Names.BatchConsumer), filtered on the batch's subject: a
// batch can then be pulled in its share, paused and drained apart from
// every other, with JetStream's own ack, redelivery and pause. Workers
// find the batches with jobs from the stream's subject counts, about every
// Discover and at once when the batches bucket changes; a lane whose
// subject is empty is dropped, and its consumer deleted once nothing is
// pending on it. InactiveThreshold deletes the consumers no worker pulls
// any more (every worker stopped).

const (
	// laneInactive is how long a lane's consumer outlives the last pull.
	laneInactive = time.Hour
	// probeEvery is how often the stream's subject count is read between
	// full discoveries: a new subject (batch) triggers one at once.
	probeEvery = 100 * time.Millisecond
	// fastDiscovery is how long after a change of the batches bucket
	// every probe is a full discovery: enqueue writes a batch's entry just
	// before it publishes.
	fastDiscovery = 2 * time.Second
	// lingerDone is how long a batch's entry is kept once its last job is
	// gone: late jobs of a cancelled batch are still cancelled.
	lingerDone = 10 * time.Minute
	// sweepAge is how old a batch consumer with nothing to do must be for
	// the sweep to retire it (a lane may be about to use a new one).
	sweepAge = 10 * time.Second
	// sweepEvery spaces the sweeps of batch consumers (one listing each).
	sweepEvery = 15 * time.Second
	// forgetEvery spaces the sweeps of finished batches' entries.
	forgetEvery = time.Minute
	// maxCreating bounds the lane consumers created at once.
	maxCreating = 8
	// earlySkew widens "stored before the consumer was created" by the
	// clock difference between two servers of a cluster.
	earlySkew = 250 * time.Millisecond
)

// farFuture is the PauseUntil of a paused batch's consumer.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// lane is one batch's consumer and what this worker fetched from it.
// Consumer.mu guards every field but those set before it is shared.
type lane struct {
	subject, batch, name string
	id                   uint64 // creation order: breaks ties in pass

	cons    jetstream.Consumer // nil while it is being created
	created time.Time          // the consumer's creation (the server's clock)
	leader  string             // the consumer's leader when last heard of (clustered)
	acks    *recentAcks        // the last acks sent without confirmation (reack.go)

	ctl BatchControl // weight and state applied
	// halt ends when the lane leaves running: a job of it still waiting
	// for its host's admission is then not sent (Delivery.Halt).
	halt     context.Context
	haltStop context.CancelFunc
	pass     uint64
	at       int  // index in the ready heap, -1 when not in it
	idle     bool // nothing fetched since it was last cold: no credit kept

	ready   []*Delivery // fetched, not started
	out     int         // fetched and not settled
	running int         // in a request place
	placed  int         // given a place and not settled yet
	asked   int         // still expected from the hot pull under way

	pulling    bool
	cancelPull context.CancelFunc // of a cold pull under way
	cold       bool               // its last pull had nothing to deliver at once
	failures   int
	retryAt    time.Time
	count      uint64 // messages in the stream at the last discovery
	gone       bool   // the stream has none of its messages
	creating   bool

	seen readiness // its jobs ready to send now (readiness.go)
}

func (l *lane) pop() *Delivery {
	d := l.ready[0]
	l.ready[0] = nil
	l.ready = l.ready[1:]
	return d
}

func (l *lane) takeReady() []*Delivery {
	ds := l.ready
	l.ready = nil
	return ds
}

// active: the lane counts in the shares (running, and with jobs to offer).
func (l *lane) active() bool {
	return l.cons != nil && !l.gone && l.ctl.State == BatchRunning && (!l.cold || l.out > 0)
}

// discoverLoop keeps the lanes in step with the stream's subjects and the
// batches bucket until ctx ends.
func (c *Consumer) discoverLoop(ctx context.Context) {
	probe := time.NewTicker(probeEvery)
	defer probe.Stop()
	var last time.Time
	var fastUntil time.Time
	subjects := ^uint64(0)
	for {
		full := time.Since(last) >= c.cfg.Discover || time.Now().Before(fastUntil)
		if !full {
			ictx, cancel := context.WithTimeout(ctx, DefaultCallTimeout)
			info, err := c.stream.Info(ictx)
			cancel()
			full = err != nil || info.State.NumSubjects != subjects
		}
		if full {
			if n, err := c.discover(ctx); err == nil {
				subjects, last = n, time.Now()
			} else if ctx.Err() == nil {
				c.consuming.Store(false)
				c.log.Warn().Err(err).Msg("looking for batches with jobs failed; retrying")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-probe.C:
		case <-c.view.Changed():
			c.applyControls()
			fastUntil = time.Now().Add(fastDiscovery)
		}
	}
}

// discover reads which job subjects hold messages and brings the lanes
// in step: a lane for each, none for the others. It returns the number of
// subjects.
func (c *Consumer) discover(ctx context.Context) (uint64, error) {
	ictx, cancel := context.WithTimeout(ctx, DefaultCallTimeout)
	info, err := c.stream.Info(ictx, jetstream.WithSubjectFilter(c.names.JobSubject(anyBatch)))
	cancel()
	if err != nil {
		return 0, err
	}
	subjects := info.State.Subjects
	c.mu.Lock()
	for subject, n := range subjects {
		if n == 0 {
			continue
		}
		l := c.lanes[subject]
		if l == nil {
			l = c.newLaneLocked(subject)
		}
		if n > l.count {
			l.cold = false // new jobs: worth a pull at once
		}
		l.count, l.gone = n, false
		if l.cons == nil && !l.creating {
			c.createLaneLocked(ctx, l)
		}
	}
	for subject, l := range c.lanes {
		if subjects[subject] == 0 {
			l.count, l.gone = 0, true
			if l.cancelPull != nil {
				l.cancelPull()
			}
			c.dropIfDoneLocked(l)
		}
	}
	c.mu.Unlock()
	c.consuming.Store(true)
	c.signal()
	c.forgetFinished(ctx, subjects)
	return uint64(len(subjects)), nil
}

// found makes cons, created at created, the lane's consumer.
func (l *lane) found(cons jetstream.Consumer, created time.Time) {
	l.cons, l.created, l.cold = cons, created, false
	if ci := cons.CachedInfo(); ci != nil && ci.Cluster != nil {
		l.leader = ci.Cluster.Leader
	}
}

func (c *Consumer) newLaneLocked(subject string) *lane {
	c.nextID++
	batch := c.names.batchOfJob(subject)
	l := &lane{subject: subject, batch: batch, name: c.names.BatchConsumer(subject), id: c.nextID, at: -1, idle: true,
		acks: newRecentAcks(4 * c.cfg.MaxInflight)}
	l.ctl = c.control(batch)
	l.setHalt()
	c.lanes[subject] = l
	return l
}

// setHalt gives the lane a halt context that is live while it runs and
// ended otherwise.
func (l *lane) setHalt() {
	if l.ctl.State == BatchRunning {
		if l.halt == nil || l.halt.Err() != nil {
			l.halt, l.haltStop = context.WithCancel(context.Background())
		}
		return
	}
	if l.haltStop != nil {
		l.haltStop()
		return
	}
	l.halt, l.haltStop = context.WithCancel(context.Background())
	l.haltStop()
}

// createLaneLocked creates (or finds) the lane's consumer in the
// background, a few at a time.
func (c *Consumer) createLaneLocked(ctx context.Context, l *lane) {
	l.creating = true
	c.handlers.Add(1)
	go func() {
		defer c.handlers.Done()
		var cons jetstream.Consumer
		var created time.Time
		var err error
		select {
		case c.creating <- struct{}{}:
			cons, created, err = c.laneConsumer(ctx, l)
			<-c.creating
		case <-ctx.Done():
			err = ctx.Err()
		}
		c.mu.Lock()
		l.creating = false
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn().Err(err).Str("batch", l.batch).Str("consumer", l.name).Msg("creating a batch's consumer failed; retrying")
			}
			c.retryLocked(l, brokerPause(1))
			c.dropIfDoneLocked(l)
		} else {
			if !l.created.IsZero() && created.Equal(l.created) {
				// The consumer a pull had found missing is the one it
				// was: it was only out of reach (no responders, or not
				// found on a new leader still catching up), most often
				// while its leader changed. Acks, NAKs and deliveries
				// may have gone with the old leader.
				c.rescueSoon()
			}
			l.found(cons, created)
			l.sawCreated(cons, c.now())
			// Its jobs may have gone while it was made: then it is done
			// now, and its consumer must not outlive it.
			c.dropIfDoneLocked(l)
		}
		c.mu.Unlock()
		c.signal()
	}()
}

// laneConsumer finds the lane's consumer or creates it (paused if its
// batch is), and returns it with its creation time. A cancelled batch's
// consumer left paused (by a cancel that did not finish) is resumed: its
// jobs are only ever settled as cancelled.
func (c *Consumer) laneConsumer(ctx context.Context, l *lane) (jetstream.Consumer, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*DefaultCallTimeout)
	defer cancel()
	state := c.control(l.batch).State
	cons, err := c.stream.Consumer(ctx, l.name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cfg := jetstream.ConsumerConfig{
			Durable:       l.name,
			Description:   "jetpost batch " + l.batch,
			FilterSubject: l.subject,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       c.cfg.AckWait,
			// Deferrals and hand-backs are deliveries too; the attempt
			// budget and the maximum job age end a job, not a delivery count.
			MaxDeliver:        -1,
			MaxAckPending:     c.cfg.MaxAckPending,
			DeliverPolicy:     jetstream.DeliverAllPolicy,
			InactiveThreshold: laneInactive,
		}
		if state == BatchPaused {
			cfg.PauseUntil = &farFuture
		}
		cons, err = c.stream.CreateConsumer(ctx, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) { // another worker won
			cons, err = c.stream.Consumer(ctx, l.name)
		}
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	info := cons.CachedInfo()
	// The state read before may be stale: a resume that came while the
	// consumer was created paused found no consumer to resume.
	if state = c.control(l.batch).State; state != BatchPaused && info.Paused {
		if _, err := c.stream.ResumeConsumer(ctx, l.name); err != nil {
			c.log.Warn().Err(err).Str("batch", l.batch).Str("state", string(state)).Msg("resuming a batch's paused consumer failed")
		}
	}
	return cons, info.Created, nil
}

// dropIfDoneLocked forgets a lane whose subject is empty once this worker
// holds nothing of it, and deletes its consumer if nothing is pending.
func (c *Consumer) dropIfDoneLocked(l *lane) {
	if !l.gone || l.out > 0 || l.pulling || l.creating || c.lanes[l.subject] != l {
		return
	}
	delete(c.lanes, l.subject)
	c.unreadyLocked(l)
	if l.cons == nil || c.stopping {
		return
	}
	cons := l.cons
	c.handlers.Add(1)
	go func() {
		defer c.handlers.Done()
		c.retire(cons, l)
	}()
}

// retire deletes a drained lane's consumer. One with jobs pending (a job
// published since) stays: a worker that finds its subject again uses it.
// Another worker's pull on it fails, and that worker makes it again only if
// the batch still has jobs.
func (c *Consumer) retire(cons jetstream.Consumer, l *lane) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCallTimeout)
	defer cancel()
	if info, err := cons.Info(ctx); err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
		return
	}
	// Paused first, then looked at again: a job published between a look
	// and the delete would be delivered, and then delivered again by the
	// next consumer while its first request is under way.
	// If the pause fails (nats-server 2.15 can lose the store directory
	// of a consumer deleted and made again at once, and then refuses every
	// update of it), the second look alone has to do.
	if _, err := c.stream.PauseConsumer(ctx, l.name, farFuture); err != nil {
		c.log.Debug().Err(err).Str("consumer", l.name).Msg("pausing a drained batch's consumer before deleting it failed")
	}
	if info, err := cons.Info(ctx); err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
		if c.control(l.batch).State != BatchPaused {
			if _, err := c.stream.ResumeConsumer(ctx, l.name); err != nil {
				c.log.Warn().Err(err).Str("consumer", l.name).Msg("resuming a batch's consumer after a look before deleting it failed; workers resume it when they next see it")
			}
		}
		return
	}
	if err := c.stream.DeleteConsumer(ctx, l.name); err != nil && !IsNotFound(err) {
		c.log.Debug().Err(err).Str("consumer", l.name).Msg("deleting a drained batch's consumer failed; it expires when idle")
	}
}

// forgetFinished deletes, now and then, the entries of batches with no job
// left in the stream whose last change is older than lingerDone. A paused
// batch's entry stays.
func (c *Consumer) forgetFinished(ctx context.Context, subjects map[string]uint64) {
	now := c.now()
	if now.Sub(c.lastSweep) >= sweepEvery {
		c.lastSweep = now
		c.sweepConsumers(ctx, subjects)
	}
	if now.Sub(c.lastForget) < forgetEvery {
		return
	}
	c.lastForget = now
	for batch, e := range c.view.entries() {
		if subjects[c.names.JobSubject(batch)] > 0 || e.c.State == BatchPaused || now.Sub(e.c.Updated) < lingerDone {
			continue
		}
		if err := c.batches.Forget(ctx, batch, e.rev); err != nil {
			c.log.Debug().Err(err).Str("batch", batch).Msg("forgetting a finished batch failed")
		}
	}
}

// sweepConsumers retires the batch consumers no worker retired: made again
// by a worker just as another deleted it, or left when a look before the
// delete saw a job in flight. Without this they would last until their
// inactive threshold.
func (c *Consumer) sweepConsumers(ctx context.Context, subjects map[string]uint64) {
	list := c.stream.ListConsumers(ctx)
	var idle []*lane
	for info := range list.Info() {
		subject := info.Config.FilterSubject
		if info.Name != c.names.BatchConsumer(subject) || subjects[subject] > 0 ||
			info.NumPending > 0 || info.NumAckPending > 0 || c.now().Sub(info.Created) < sweepAge {
			continue
		}
		c.mu.Lock()
		_, active := c.lanes[subject]
		c.mu.Unlock()
		if !active {
			idle = append(idle, &lane{subject: subject, batch: c.names.batchOfJob(subject), name: info.Name})
		}
	}
	if err := list.Err(); err != nil {
		c.log.Debug().Err(err).Msg("listing batch consumers failed")
	}
	for _, l := range idle {
		if cons, err := c.stream.Consumer(ctx, l.name); err == nil {
			c.retire(cons, l)
		}
	}
}
