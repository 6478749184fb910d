package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/pkg/job"
)

// ConsumerConfig bounds how much work one worker process holds.
type ConsumerConfig struct {
	// MaxInflight is the number of handlers running at once.
	MaxInflight int
	// Prefetch is how many fetched messages may wait for a free slot. Their
	// ack timers run while they wait, so the window stays small, and they
	// are kept alive with progress signals like running jobs.
	Prefetch int
	// AckWait is the consumer's ack wait; running and waiting jobs signal
	// progress every third of it.
	AckWait       time.Duration
	MaxAckPending int
	// ShutdownTimeout is how long running handlers may finish after Run's
	// context is cancelled before their context is cancelled too.
	ShutdownTimeout time.Duration
	// PullWait bounds one pull request; it is also how long a shutdown may
	// wait for the pull under way to end. Default 1s.
	PullWait time.Duration
	// Worker names this process in dead letters.
	Worker string
	// Streams is used to create the attempts bucket.
	Streams StreamConfig
	// Policy is what a job may ask of the deployment (reply_to, timeout);
	// a message asking more is invalid. Its SubjectPrefix is the Names'.
	Policy job.Policy
	// Rescue tunes the rescue of deliveries lost with a consumer leader.
	Rescue RescueConfig
	// Discover is how often the stream is asked which batches have jobs
	// (it is also asked at once when the batches bucket changes, and
	// watched more lightly in between). Default 1s.
	Discover time.Duration
	// Now is the clock of deferral due times; nil is time.Now.
	Now func() time.Time
}

// Consumer takes jobs from one durable consumer per batch (a lane, see
// lanes.go) and shares this worker's request places between the batches
// with jobs ready by weight (dispatch.go); it settles every delivery
// according to its handler's decision.
type Consumer struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	names   Names
	cfg     ConsumerConfig
	log     zerolog.Logger
	kv      jetstream.KeyValue
	done    *DoneIndex
	batches *Batches

	// mu guards the lanes and the scheduler's state (dispatch.go).
	mu sync.Mutex
	sched
	// ctl guards view and fenced (fence.go).
	ctl    sync.Mutex
	view   *BatchView
	fenced map[string]entryAt

	consuming atomic.Bool
	failed    failures
	holds     *holdings
	// rescuer runs the rescues (rescue.go), one at a time.
	rescuer rerun
	// life is Run's context, which background work started from any path
	// shares (background.go); Run waits for it before it returns.
	life       context.Context
	background sync.WaitGroup
	// reacker sends the last acks sent without confirmation again on
	// signs that they may have been lost (reack.go), one round at a time.
	reacker rerun
}

// NewConsumer opens the attempts and batches buckets and deletes the
// consumer every worker shared before batches had lanes of their own (a
// work-queue stream refuses a lane overlapping it). The streams must exist
// (Setup); lanes are created as batches appear.
func NewConsumer(ctx context.Context, js jetstream.JetStream, n Names, cfg ConsumerConfig, log zerolog.Logger) (*Consumer, error) {
	if cfg.MaxInflight < 1 {
		return nil, errors.New("queue: MaxInflight must be at least 1")
	}
	if cfg.Prefetch < 1 {
		cfg.Prefetch = 1
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.PullWait <= 0 {
		cfg.PullWait = time.Second
	}
	// Jobs waiting out a NakWithDelay stay pending on the server, so this
	// limit counts deferred jobs too: it must be generous, or a down host's
	// deferrals would stop deliveries for every host. -1 is unlimited.
	if cfg.MaxAckPending == 0 {
		cfg.MaxAckPending = 1_000_000
	}
	if cfg.MaxAckPending > 0 && cfg.MaxAckPending < cfg.MaxInflight+cfg.Prefetch {
		cfg.MaxAckPending = cfg.MaxInflight + cfg.Prefetch
	}
	cfg.Policy.SubjectPrefix = n.Prefix
	if cfg.Rescue.Grace <= 0 {
		cfg.Rescue.Grace = time.Second
	}
	if cfg.Rescue.Census <= 0 {
		cfg.Rescue.Census = time.Second
	}
	if cfg.Rescue.Max <= 0 {
		cfg.Rescue.Max = 5 * time.Second
	}
	cfg.Rescue.Max = max(cfg.Rescue.Max, cfg.Rescue.Census)
	if cfg.Discover <= 0 {
		cfg.Discover = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Consumer{js: js, names: n, cfg: cfg, log: log, holds: newHoldings(), done: NewDoneIndex(js, n), fenced: map[string]entryAt{}}
	kv, err := attemptsBucket(ctx, js, n, cfg.Streams)
	if err != nil {
		return nil, err
	}
	c.kv = kv
	if c.batches, err = OpenBatches(ctx, js, n, cfg.Streams); err != nil {
		return nil, err
	}
	if c.stream, err = js.Stream(ctx, n.JobsStream()); err != nil {
		return nil, fmt.Errorf("opening %s: %w", n.JobsStream(), err)
	}
	c.migrate(ctx)
	return c, nil
}

// migrate deletes the consumer workers shared before batches had their
// own, if it is there: a work-queue stream refuses lanes overlapping it.
// Failing that is logged, not fatal: lanes then fail to be created, and
// say why.
func (c *Consumer) migrate(ctx context.Context) {
	name := c.names.Consumer()
	_, err := c.stream.Consumer(ctx, name)
	if err == nil {
		err = c.stream.DeleteConsumer(ctx, name)
		if err == nil {
			c.log.Info().Str("consumer", name).Msg("deleted the consumer workers shared before batches had their own; its unacknowledged jobs come back through their batches' consumers")
			return
		}
	}
	if !IsNotFound(err) {
		c.log.Warn().Err(err).Str("consumer", name).Msg("could not delete the consumer older workers shared (stop them first); batches' consumers cannot be created beside it")
	}
}

func (c *Consumer) now() time.Time { return c.cfg.Now() }

// Consuming reports whether Run is taking jobs and the last look for
// batches and the last pulls worked; it feeds readiness.
func (c *Consumer) Consuming() bool { return c.consuming.Load() }

// ErrShutdownDeadline is the cause given to handler contexts cancelled
// because the shutdown grace period ran out.
var ErrShutdownDeadline = errors.New("shutdown grace period over")

// Run pulls and handles jobs until ctx is cancelled. Then it stops pulling,
// hands back fetched jobs that have not started, lets running handlers
// finish within ShutdownTimeout, cancels the rest (their handlers should
// answer HandBack) and returns once every delivery is settled.
func (c *Consumer) Run(ctx context.Context, h Handler) error {
	work, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)

	view, err := c.batches.Watch(ctx)
	if err != nil {
		return err
	}
	c.ctl.Lock()
	c.view = view
	c.ctl.Unlock()
	stopCensus, err := c.answerCensus()
	if err != nil {
		return err
	}
	defer stopCensus()
	stopFences, err := c.answerFences(work)
	if err != nil {
		return err
	}
	defer stopFences()
	c.life = ctx
	defer c.background.Wait()
	// After life is set: an election may start sending acks again at once.
	stopWatch, err := c.watchLeaders(ctx)
	if err != nil {
		return err
	}
	defer stopWatch()

	c.startSched(work)
	var finding sync.WaitGroup
	finding.Add(1)
	go func() {
		defer finding.Done()
		c.discoverLoop(ctx)
	}()
	c.dispatchLoop(ctx, work, h)
	finding.Wait()
	c.consuming.Store(false)

	grace := time.AfterFunc(c.cfg.ShutdownTimeout, func() { cancelWork(ErrShutdownDeadline) })
	c.handlers.Wait()
	grace.Stop()
	c.stopPlacers()
	// Acks are not confirmed one by one (ackStored): one round trip puts
	// the last of them through before the caller closes the connection.
	if err := c.js.Conn().FlushTimeout(ackTry); err != nil {
		c.log.Warn().Err(err).Msg("flushing the last acknowledgements failed; their jobs' markers settle the redeliveries")
	}
	return nil
}

// process runs the handler for one delivery and settles it; release frees
// the delivery's slot once no request to a target can follow.
func (c *Consumer) process(ctx context.Context, d *Delivery, h Handler, release func()) {
	if d.decodeErr != nil {
		release()
		c.poison(ctx, d)
		return
	}
	// A job another producer published again after it ran: its result
	// stands. Settled after the slot is freed, as every ack is.
	if ran, err := c.ranBefore(ctx, d); err != nil || ran {
		release()
		if err != nil {
			c.deliveryEvent(c.log.Warn(), d).Err(err).Msg("looking up the completion marker of a job published by another producer failed; deferring it")
			c.settle(ctx, d, Decision{Action: NakAfter, Delay: time.Second})
			return
		}
		c.settleFinished(ctx, d)
		return
	}
	// A delivery stored before its lane's consumer was created may have
	// been delivered by an earlier consumer of the subject (the shared one
	// of older workers, or one deleted by a cancel or for inactivity).
	if d.checked && d.finished {
		release()
		c.settleFinished(ctx, d)
		return
	}
	if d.needsCheck() { // decodeErr is nil here
		finished, err := c.redelivered(ctx, d)
		if err != nil {
			release()
			// Without the count the budget could be overspent; try later.
			c.log.Warn().Err(err).Str("job", d.Job.ID).Msg("reading a redelivered job's state failed; deferring job")
			c.settle(ctx, d, Decision{Action: NakAfter, Delay: time.Second})
			return
		}
		if finished {
			release()
			c.settleFinished(ctx, d)
			return
		}
	}
	dec := h(ctx, d)
	d.lane.seen.decidedOn(dec, d.NumDelivered, c.now)
	release()
	c.settle(ctx, d, dec)
}

// redelivered loads what earlier deliveries of d left: its attempt counts,
// and whether it finished already (its result stored, its ack lost with a
// server), in one round trip.
func (c *Consumer) redelivered(ctx context.Context, d *Delivery) (finished bool, err error) {
	var call *DoneCall
	if d.Job.Kind != job.KindCallback { // a callback message leaves no marker
		call = c.done.Lookup([]DoneKey{DoneKeyOf(d.Job.ID, d.fp)})
		defer call.Cancel()
	}
	rec, err := c.loadAttempts(ctx, d.Seq)
	if err != nil {
		return false, fmt.Errorf("reading attempts: %w", err)
	}
	d.Attempts, d.TurnedAway, d.PrevTrace, d.countsKnown = rec.Attempts, rec.TurnedAway, rec.Trace, true
	if call == nil {
		return false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, markerWait)
	defer cancel()
	m, err := call.Wait(wctx)
	if err != nil {
		return false, err
	}
	// The marker names the job message it settled: a job enqueued again
	// is another message and is sent again.
	return len(m) == 1 && m[0].settled(d), nil
}
