package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/pkg/job"
)

// Action is what happens to a delivered job once the handler has decided.
type Action int

const (
	// Complete stores Decision.Result (and a dead letter when the job or
	// its callback failed), then acknowledges the job. For a callback
	// message (job.KindCallback) no result is stored, the job has its
	// own: only a new dead letter if the callback failed again.
	Complete Action = iota
	// Retry records Decision.Attempts and redelivers the job after
	// Decision.Delay. JetStream holds it meanwhile, so the retry survives a
	// crash of this worker and occupies no slot here.
	Retry
	// Defer redelivers the job after Decision.Delay without spending an
	// attempt (open breaker, host limit). A breaker's turn-away raises
	// Decision.TurnedAway, which is recorded like attempts.
	Defer
	// HandBack returns the job at once, attempt unspent, for another worker
	// (shutdown).
	HandBack
)

func (a Action) String() string {
	return [...]string{"complete", "retry", "defer", "hand-back"}[a]
}

// Decision is a handler's verdict on one delivery.
type Decision struct {
	Action   Action
	Delay    time.Duration // Retry and Defer
	Attempts int           // Retry: attempts spent so far, including this delivery's
	// TurnedAway counts the tries spent without a request because the
	// host's breaker was open, this delivery's included. Recorded with
	// Attempts on Retry, and on a Defer that raises it.
	TurnedAway int
	Result     *job.Result // Complete
}

// Delivery is one job handed to a handler.
type Delivery struct {
	Job *job.Job
	// Attempts is how many HTTP attempts earlier deliveries already spent.
	Attempts int
	// TurnedAway is how many earlier deliveries an open breaker turned
	// away (Decision.TurnedAway).
	TurnedAway int
	// NumDelivered counts deliveries, including deferrals and hand-backs.
	NumDelivered uint64
	Seq          uint64 // stream sequence: the job message's identity in the stream

	msg       jetstream.Msg
	decodeErr error
	keepalive *keepalive
}

// Handler decides what to do with a delivery. ctx is cancelled only when a
// shutdown's grace period is over.
type Handler func(ctx context.Context, d *Delivery) Decision

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
}

// Consumer pulls jobs from the shared durable consumer with a bounded window
// and settles every delivery according to its handler's decision.
type Consumer struct {
	js    jetstream.JetStream
	names Names
	cfg   ConsumerConfig
	log   zerolog.Logger
	kv    jetstream.KeyValue

	mu   sync.Mutex
	cons jetstream.Consumer

	consuming atomic.Bool
}

// NewConsumer creates (or updates) the durable consumer and the attempts
// bucket. The streams must exist (Setup).
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
	c := &Consumer{js: js, names: n, cfg: cfg, log: log}
	kv, err := attemptsBucket(ctx, js, n, cfg.Streams)
	if err != nil {
		return nil, err
	}
	c.kv = kv
	if err := c.ensureConsumer(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Consumer) ensureConsumer(ctx context.Context) error {
	cons, err := c.js.CreateOrUpdateConsumer(ctx, c.names.JobsStream(), jetstream.ConsumerConfig{
		Durable:       c.names.Consumer(),
		Description:   "jetpost workers",
		FilterSubject: c.names.Prefix + ".jobs.>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		// Deferrals and hand-backs are deliveries too; the attempt budget
		// and the maximum job age end a job, not a delivery count.
		MaxDeliver:    -1,
		MaxAckPending: c.cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("creating consumer %s on %s: %w", c.names.Consumer(), c.names.JobsStream(), err)
	}
	c.mu.Lock()
	c.cons = cons
	c.mu.Unlock()
	return nil
}

func (c *Consumer) consumer() jetstream.Consumer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cons
}

// Consuming reports whether Run is pulling and the last pull worked; it
// feeds readiness.
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

	window := c.cfg.MaxInflight + c.cfg.Prefetch
	queue := make(chan *Delivery, window)
	var outstanding atomic.Int64
	room := make(chan struct{}, 1)
	settled := func() {
		outstanding.Add(-1)
		select {
		case room <- struct{}{}:
		default:
		}
	}

	go func() {
		defer close(queue)
		defer c.consuming.Store(false)
		c.fetchLoop(ctx, queue, &outstanding, room, window)
	}()

	slots := make(chan struct{}, c.cfg.MaxInflight)
	var running sync.WaitGroup
	for d := range queue {
		if ctx.Err() == nil {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			// Not started: hand it back at once rather than make it wait out
			// its ack timer.
			c.settle(work, d, Decision{Action: HandBack})
			settled()
			continue
		}
		running.Add(1)
		go func() {
			defer running.Done()
			// The slot bounds requests to targets; storing the result and
			// the ack need only the broker, so they run outside it.
			c.process(work, d, h, func() { <-slots })
			settled()
		}()
	}
	grace := time.AfterFunc(c.cfg.ShutdownTimeout, func() { cancelWork(ErrShutdownDeadline) })
	running.Wait()
	grace.Stop()
	return nil
}

// fetchLoop keeps the window full: it pulls as many messages as there is
// room for, in one request, once at least half the prefetch window is free,
// so pulls are batched and a refill arrives before the slots run dry.
func (c *Consumer) fetchLoop(ctx context.Context, queue chan<- *Delivery, outstanding *atomic.Int64, room <-chan struct{}, window int) {
	refill := int64(max(1, c.cfg.Prefetch/2))
	failures := 0
	for ctx.Err() == nil {
		free := int64(window) - outstanding.Load()
		if free < refill {
			select {
			case <-room:
			case <-ctx.Done():
			}
			continue
		}
		batch, err := c.consumer().Fetch(int(free), jetstream.FetchMaxWait(c.cfg.PullWait))
		if err == nil {
			for msg := range batch.Messages() {
				outstanding.Add(1)
				queue <- c.accept(msg)
			}
			err = batch.Error()
		}
		if err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			c.consuming.Store(false)
			failures++
			c.log.Warn().Err(err).Int("failures", failures).Msg("pulling jobs failed; retrying")
			if IsNotFound(err) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				// The server lost the consumer (restarted without its
				// store, or someone deleted it): create it again.
				if err := c.ensureConsumer(ctx); err != nil {
					c.log.Warn().Err(err).Msg("re-creating consumer failed")
				}
			}
			sleepCtx(ctx, min(time.Duration(failures)*250*time.Millisecond, 5*time.Second))
			continue
		}
		failures = 0
		c.consuming.Store(true)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// accept wraps a fetched message and starts keeping it alive: its ack timer
// runs from the moment the server sent it, whether it waits for a slot or
// runs a long request.
func (c *Consumer) accept(msg jetstream.Msg) *Delivery {
	d := &Delivery{msg: msg}
	if md, err := msg.Metadata(); err == nil {
		d.NumDelivered = md.NumDelivered
		d.Seq = md.Sequence.Stream
	}
	d.Job, d.decodeErr = job.Decode(msg.Data())
	d.keepalive = startKeepalive(msg, c.cfg.AckWait/3)
	return d
}

// process runs the handler for one delivery and settles it; release frees
// the delivery's slot once no request to a target can follow.
func (c *Consumer) process(ctx context.Context, d *Delivery, h Handler, release func()) {
	if d.decodeErr != nil {
		release()
		c.poison(ctx, d)
		return
	}
	if d.NumDelivered > 1 {
		rec, err := c.loadAttempts(ctx, d.Seq)
		if err != nil {
			release()
			// Without the count the budget could be overspent; try later.
			c.log.Warn().Err(err).Str("job", d.Job.ID).Msg("reading attempts failed; deferring job")
			c.settle(ctx, d, Decision{Action: Defer, Delay: time.Second})
			return
		}
		d.Attempts, d.TurnedAway = rec.Attempts, rec.TurnedAway
	}
	dec := h(ctx, d)
	release()
	c.settle(ctx, d, dec)
}

// attemptsRecord is what the attempts bucket keeps per job message. It is
// stored as a bare number while nothing was turned away, as before the
// count of turn-aways existed, and as JSON otherwise.
type attemptsRecord struct {
	Attempts   int `json:"attempts"`
	TurnedAway int `json:"turned_away,omitempty"`
}

func (r attemptsRecord) encode() []byte {
	if r.TurnedAway == 0 {
		return []byte(strconv.Itoa(r.Attempts))
	}
	b, _ := json.Marshal(r)
	return b
}

func decodeAttempts(b []byte) (attemptsRecord, error) {
	var r attemptsRecord
	if len(b) > 0 && b[0] == '{' {
		err := json.Unmarshal(b, &r)
		return r, err
	}
	n, err := strconv.Atoi(string(b))
	return attemptsRecord{Attempts: n}, err
}

func (c *Consumer) loadAttempts(ctx context.Context, seq uint64) (attemptsRecord, error) {
	e, err := c.kv.Get(ctx, strconv.FormatUint(seq, 10))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return attemptsRecord{}, nil
	}
	if err != nil {
		return attemptsRecord{}, err
	}
	return decodeAttempts(e.Value())
}

// recordAttempts stores the counts a Retry or a breaker's Defer spent.
// Counts never go down, so a decision that leaves one out keeps the
// delivery's.
func (c *Consumer) recordAttempts(ctx context.Context, d *Delivery, dec Decision) {
	rec := attemptsRecord{Attempts: max(dec.Attempts, d.Attempts), TurnedAway: max(dec.TurnedAway, d.TurnedAway)}
	if _, err := c.kv.Put(ctx, strconv.FormatUint(d.Seq, 10), rec.encode()); err != nil {
		c.deliveryEvent(c.log.Warn(), d).Err(err).Msg("recording attempts failed")
	}
}

// settle carries out a decision. Every path ends the delivery's keepalive.
func (c *Consumer) settle(ctx context.Context, d *Delivery, dec Decision) {
	defer d.keepalive.stop()
	var err error
	switch dec.Action {
	case Complete:
		if d.Job.Kind == job.KindCallback {
			if serr := c.storeDeadLetter(ctx, d, dec.Result); serr != nil {
				c.deliveryEvent(c.log.Error(), d).Err(serr).Msg("storing a re-driven callback's failure failed; it will be redelivered")
				return
			}
			err = c.ackDurable(ctx, d)
			break
		}
		marker, serr := c.storeResult(ctx, d, dec.Result)
		if serr != nil {
			// The result is not stored, so the job must not be acked: leave
			// it to be redelivered once its ack wait passes.
			c.deliveryEvent(c.log.Error(), d).Err(serr).Msg("storing result failed; job will be redelivered")
			return
		}
		err = c.ackDurable(ctx, d)
		// The marker was published before the ack's round trip, so its
		// answer is in by now: checking costs no wait and no goroutine.
		c.awaitMarker(ctx, d, marker)
	case Retry:
		c.recordAttempts(ctx, d, dec)
		err = d.msg.NakWithDelay(dec.Delay)
	case Defer:
		if dec.TurnedAway > d.TurnedAway {
			c.recordAttempts(ctx, d, dec)
		}
		err = d.msg.NakWithDelay(dec.Delay)
	case HandBack:
		err = d.msg.Nak()
	}
	if err != nil {
		c.deliveryEvent(c.log.Warn(), d).Err(err).Str("action", dec.Action.String()).Msg("settling job failed; it will be redelivered after its ack wait")
	}
}

// deliveryEvent adds a delivery's fields to an event; only the rare paths
// that log pay for them.
func (c *Consumer) deliveryEvent(ev *zerolog.Event, d *Delivery) *zerolog.Event {
	ev = ev.Uint64("seq", d.Seq)
	if d.Job != nil {
		ev = ev.Str("job", d.Job.ID).Str("batch", d.Job.Batch)
	}
	return ev
}

// storeResult publishes the result to the batch's result subject (and a
// dead letter for a failure), de-duplicated by job, retrying while the
// broker is unreachable: a job is acked only once its result is stored.
// The result goes first: it is the record (the first one stored wins), and
// were the worker to die between the two, the job's resend might succeed;
// a dead letter stored first would then sit beside an ok result, and a
// re-drive would send the job once more. So a reader that sees a failed
// result may find its dead letter a moment later.
// It also publishes the job's completion marker (done.go) and returns its
// pending ack, or nil if the marker could not be sent.
func (c *Consumer) storeResult(ctx context.Context, d *Delivery, r *job.Result) (jetstream.PubAckFuture, error) {
	limit := c.payloadLimit()
	data, err := job.EncodeResultWithin(r, limit)
	if err != nil {
		return nil, fmt.Errorf("encoding result: %w", err)
	}
	dedup := ResultID(d.Job)
	marker, err := c.storeResultMarked(ctx, d.Job, r, dedup, data)
	if err != nil {
		return nil, fmt.Errorf("storing result: %w", err)
	}
	if err := c.storeDeadLetter(ctx, d, r); err != nil {
		if !r.OK {
			return nil, err
		}
		// The job succeeded and its result is stored: leaving it unacked
		// for want of its callback's dead letter would send the request
		// again, which is worse than losing the letter.
		c.deliveryEvent(c.log.Error(), d).Err(err).Msg("storing the failed callback's dead letter failed; the job's result is stored")
	}
	if d.Job.ReplyTo != "" {
		// A copy for whoever asked; core NATS, best effort: the stored
		// result is the record.
		if err := c.js.Conn().Publish(d.Job.ReplyTo, data); err != nil {
			c.log.Warn().Err(err).Str("job", r.ID).Str("reply_to", d.Job.ReplyTo).Msg("reply_to copy not sent")
		}
	}
	return marker, nil
}

// storeDeadLetter stores the dead letter the settled delivery leaves, if
// any (deadLetterOf).
func (c *Consumer) storeDeadLetter(ctx context.Context, d *Delivery, r *job.Result) error {
	dl, dedup, err := deadLetterOf(d.Job, d.msg.Data(), d.Seq, r)
	if err != nil || dedup == "" {
		return err
	}
	b, err := deadLetter(dl, c.payloadLimit(), "the job is too large to keep with its failure under the server's maximum payload; enqueue it again")
	if err == nil {
		_, err = c.publishDurable(ctx, c.names.DLQSubject(r.Batch), dedup, b)
	}
	if errors.Is(err, nats.ErrMaxPayload) {
		// It will never fit, and the result, the record, is stored:
		// settle the job rather than send it again every ack wait.
		c.deliveryEvent(c.log.Error(), d).Err(err).Msg("dead letter too large to store; the job's result is stored")
	} else if err != nil {
		return fmt.Errorf("storing dead letter: %w", err)
	}
	return nil
}

// deadLetterOf returns the dead letter a settled job leaves and its
// de-duplication id, or no id when it leaves none. A failed job's keeps the
// job message as it was, for a re-drive of the job. A job that succeeded
// but whose callback finally failed, and a re-driven callback that failed
// again, keep the callback message without its result (the result is
// beside it), for a re-drive of the callback alone: the job's result
// stands. A failed job's callback is not dead-lettered apart: re-driving
// the job sends its new result to the callback.
func deadLetterOf(j *job.Job, msg []byte, seq uint64, r *job.Result) (DeadLetter, string, error) {
	dedup := ResultID(j)
	if j.Kind == job.KindCallback {
		// One per callback message, however often it is re-driven.
		dedup += "/callback/" + strconv.FormatUint(seq, 10)
	}
	switch {
	case !r.OK && j.Kind != job.KindCallback:
		return DeadLetter{Result: *r, Job: msg, StreamSeq: seq, Reason: r.Reason}, dedup, nil
	case r.Callback != nil && !r.Callback.OK:
		b, err := job.Encode(j.CallbackMessage(nil))
		if err != nil {
			return DeadLetter{}, "", fmt.Errorf("encoding callback message: %w", err)
		}
		return DeadLetter{Result: *r, Job: b, StreamSeq: seq, Reason: job.ReasonCallbackFailed}, dedup, nil
	}
	return DeadLetter{}, "", nil
}

// PayloadHeaderRoom is kept free of the server's maximum payload for a
// message's headers (the de-duplication id, at most about 350 bytes, and
// NATS's own): enqueue refuses jobs that leave less, and results and dead
// letters are cut to leave it.
const PayloadHeaderRoom = 1 << 10

// payloadLimit is the most a result or dead letter may take encoded: the
// server's maximum payload (announced on connect), less room for headers.
func (c *Consumer) payloadLimit() int {
	mp := int(c.js.Conn().MaxPayload())
	if mp <= 0 {
		return math.MaxInt // never connected yet: the publish will tell
	}
	return max(mp-PayloadHeaderRoom, mp/2)
}

// deadLetter encodes the dead letter of a failed job (or invalid message)
// within limit bytes. The job is kept whole, as a re-drive needs it; the
// result's body, stored with the result anyway, gives way first. Only a job
// too close to the limit to share a message with its failure is left out,
// JobOmitted saying so with omitted, and then the failure's free text is
// cut to fit too. A dead letter that cannot fit even so (an absurdly small
// maximum payload) is an error wrapping nats.ErrMaxPayload.
func deadLetter(dl DeadLetter, limit int, omitted string) ([]byte, error) {
	jobMsg := dl.Job
	steps := []func(){
		func() { dl.Result.Body, dl.Result.BodyTruncated = "", dl.Result.BodyTruncated || dl.Result.Body != "" },
		func() { dl.Job, dl.JobOmitted = nil, fmt.Sprintf("%s (%d bytes)", omitted, len(jobMsg)) },
		func() {
			// Ids and errors of invalid messages and long URLs are
			// untrusted text; a kilobyte says what happened.
			dl.Result.ID, dl.Result.Error = job.Cut(dl.Result.ID, job.MaxIDLen), job.Cut(dl.Result.Error, 1<<10)
			if cb := dl.Result.Callback; cb != nil {
				dl.Result.Callback = &job.CallbackResult{OK: cb.OK, Status: cb.Status, Attempts: cb.Attempts, Error: job.Cut(cb.Error, 1<<10)}
			}
		},
	}
	for i := 0; ; i++ {
		b, err := json.Marshal(dl)
		if err != nil || len(b) <= limit {
			return b, err
		}
		if i == len(steps) {
			return nil, fmt.Errorf("dead letter of %d bytes, over the limit of %d even cut down: %w", len(b), limit, nats.ErrMaxPayload)
		}
		steps[i]()
	}
}

func (c *Consumer) publishDurable(ctx context.Context, subject, msgID string, data []byte) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	for try := 1; ; try++ {
		// Short tries: during a leader election a publish gets no answer,
		// and the next try after the election succeeds at once.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := c.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil || ctx.Err() != nil || errors.Is(err, nats.ErrMaxPayload) {
			return ack, err // a message too large will never go through
		}
		c.log.Warn().Err(err).Int("try", try).Str("subject", subject).Msg("publish failed; retrying")
		sleepCtx(ctx, min(time.Duration(try)*250*time.Millisecond, 5*time.Second))
	}
}

// ackDurable acknowledges a job whose result is stored and waits for the
// server to confirm it, retrying while the broker is unreachable. A plain Ack
// is fire-and-forget: one that reaches a server while it shuts JetStream down
// is dropped, and the job would be sent to its target again after its ack
// wait. The confirmation costs a reply per job, not a slot: settling runs
// after the job's request slot is released.
func (c *Consumer) ackDurable(ctx context.Context, d *Delivery) error {
	for try := 1; ; try++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := d.msg.DoubleAck(actx)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		c.log.Warn().Err(err).Int("try", try).Uint64("seq", d.Seq).Msg("ack not confirmed; retrying")
		sleepCtx(ctx, min(time.Duration(try)*250*time.Millisecond, 5*time.Second))
	}
}

// poison stores a failed result (reason invalid) for a message that is not
// a valid job, and its dead letter, then terminates it: retrying cannot
// make it valid. The result lets whoever waits for the batch see it.
func (c *Consumer) poison(ctx context.Context, d *Delivery) {
	defer d.keepalive.stop()
	batch := batchFromSubject(d.msg.Subject(), c.names.Prefix)
	r := invalidResult(d.Job, batch, d.decodeErr, c.cfg.Worker, time.Now().UTC())
	dedup := "poison/" + strconv.FormatUint(d.Seq, 10)
	limit := c.payloadLimit()
	if data, err := job.EncodeResultWithin(anonymous(r), limit); err != nil {
		c.log.Error().Err(err).Uint64("seq", d.Seq).Msg("result of an invalid message not stored")
	} else if _, err := c.publishDurable(ctx, c.names.ResultSubject(batch), dedup, data); err != nil && !errors.Is(err, nats.ErrMaxPayload) {
		c.log.Error().Err(err).Uint64("seq", d.Seq).Msg("storing the result of an invalid message failed; it will be redelivered")
		return
	}
	dl := DeadLetter{Result: *r, Job: rawOrString(d.msg.Data()), StreamSeq: d.Seq, Reason: job.ReasonInvalid}
	b, err := deadLetter(dl, limit, "the message is too large to keep with the reason it is invalid")
	if err == nil {
		_, err = c.publishDurable(ctx, c.names.DLQSubject(batch), dedup, b)
	}
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		// Retrying cannot make it fit; terminate it all the same, or it
		// would come back every ack wait for ever.
		c.log.Error().Err(err).Uint64("seq", d.Seq).Msg("invalid message dropped: too large to dead-letter")
	case err != nil:
		c.log.Error().Err(err).Uint64("seq", d.Seq).Msg("dead-lettering an invalid message failed")
		return
	default:
		c.log.Warn().Uint64("seq", d.Seq).Str("batch", batch).Str("reason", d.decodeErr.Error()).Msg("invalid job moved to the dead-letter stream")
	}
	if err := d.msg.Term(); err != nil {
		c.log.Warn().Err(err).Msg("terminating invalid message failed")
	}
}

// invalidResult is the failed result of an invalid message, with what can
// be known of it (j is nil when it is not even JSON). Its fields are
// untrusted text: each is cut to the size a valid job allows.
func invalidResult(j *job.Job, batch string, why error, worker string, now time.Time) *job.Result {
	r := &job.Result{
		Batch: batch, Reason: job.ReasonInvalid, Error: job.Cut(why.Error(), 1<<10),
		Worker: worker, FinishedAt: now,
	}
	if j != nil {
		r.ID = job.Cut(j.ID, job.MaxIDLen)
		r.Method = job.Cut(j.Method, 64)
		r.URL = job.Cut(job.RedactURL(j.URL), job.MaxURLLen)
		r.Source = job.Cut(j.Source, job.MaxSourceLen)
	}
	return r
}

// anonymous is r as stored on the results subject: an invalid message is
// no job, so its record claims no job's id (readers would take it for that
// job's result); the error names the id it claimed, and the dead letter
// keeps it.
func anonymous(r *job.Result) *job.Result {
	a := *r
	a.ID = ""
	return &a
}

func batchFromSubject(subject, prefix string) string {
	b := strings.TrimPrefix(subject, prefix+".jobs.")
	if job.ValidBatch(b) {
		return b
	}
	return "invalid"
}

func rawOrString(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

// DeadLetter is the record on the dead-letter stream: the final result and
// the job message exactly as it was, so it can be re-driven (unless it was
// too large to keep, see JobOmitted).
type DeadLetter struct {
	// Reason is why it is here: the result's reason for a failed job or
	// invalid message, job.ReasonCallbackFailed for a job whose callback
	// finally failed (Job is then the callback message). Empty in dead
	// letters stored before it existed: the result's reason.
	Reason    string          `json:"reason,omitempty"`
	Result    job.Result      `json:"result"`
	Job       json.RawMessage `json:"job"`
	StreamSeq uint64          `json:"stream_seq"`
	// JobOmitted, when set, says why Job is empty: the job was too large
	// to be kept with its failure.
	JobOmitted string `json:"job_omitted,omitempty"`
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
