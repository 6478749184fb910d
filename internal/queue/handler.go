package queue

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// Action is what settling does to a delivered job's message once the
// handler has decided. Each name says what happens to the message.
type Action int

const (
	// AckWithResult stores Decision.Result (and a dead letter when the job
	// or its callback failed), then acknowledges the job. For a callback
	// message (job.KindCallback) no result is stored, the job has its
	// own: only a new dead letter if the callback failed again.
	AckWithResult Action = iota
	// NakAfterAttempt records Decision.Attempts and redelivers the job after
	// Decision.Delay. JetStream holds it meanwhile, so the retry survives a
	// crash of this worker and occupies no slot here.
	NakAfterAttempt
	// NakAfter redelivers the job after Decision.Delay without spending an
	// attempt (breaker turn-away, host limit). A breaker's turn-away raises
	// Decision.TurnedAway, which is recorded like attempts.
	NakAfter
	// HandBack returns the job at once, attempt unspent, for another worker
	// (shutdown).
	HandBack
)

// String is the action's name in logs and in the kind label of
// jetpost_jobs_deferred_total; these names are on the wire and do not change.
func (a Action) String() string {
	return [...]string{"complete", "retry", "defer", "hand-back"}[a]
}

// Decision is a handler's verdict on one delivery.
type Decision struct {
	Action   Action
	Delay    time.Duration // NakAfterAttempt and NakAfter
	Attempts int           // NakAfterAttempt: attempts spent so far, including this delivery's
	// TurnedAway counts the tries spent without a request because the
	// host's breaker was open, this delivery's included. Recorded with
	// Attempts on NakAfterAttempt, and on a NakAfter that raises it.
	TurnedAway int
	Result     *job.Result // AckWithResult
	// OwnCapacity: a NakAfter for want of this worker's own room (its
	// request places, a host limit at its ceiling), not because the host
	// refused; the autoscaling signal counts such jobs as ready.
	OwnCapacity bool
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
	// PrevTrace is the traceparent of the delivery that last spent an
	// attempt or a try (attempts record); Trace, set by a tracing handler,
	// is this delivery's, recorded in its place.
	PrevTrace, Trace string

	msg       jetstream.Msg
	decodeErr error
	// fp is the job's fingerprint, computed once when the job is decoded:
	// the lookups before the request and the result, marker and dead
	// letter after it are all keyed by it.
	fp        job.Fingerprint
	keepalive *keepalive
	due       time.Time // when a deferred delivery comes back
	// lane is the batch consumer it came from; c answers BatchState.
	lane *lane
	c    *Consumer
	// early: stored before its lane's consumer was created, so an
	// earlier consumer of the subject may have delivered it already.
	early bool
	// stored is when the job message was stored in the jobs stream.
	stored time.Time
	// pending is how many of the lane's jobs the server had not delivered
	// yet when it sent this one.
	pending uint64
	// checked: looked up with its burst (checkEarly), or known from this
	// worker's own deferral (recall); finished: its completion marker
	// names it.
	checked, finished bool
	// last is what settling it leaves this worker to remember; consumer
	// is its lane consumer's creation time; countsKnown: Attempts and
	// TurnedAway are the job's (recall.go).
	last        lastDelivery
	consumer    time.Time
	countsKnown bool
	fixed       BatchState        // DeliveryOf's
	state       func() BatchState // DeliveryHalting's
	halt        context.Context
	// placed: given a request place (it may have sent its request).
	placed bool
	// drain: fetched for a cancelled lane, outside the request window.
	drain bool
}

// BatchState is the current state of the delivery's batch, as this worker
// knows it now (the batches view, or a fence that came first): a handler
// checks it right before each request. A Delivery made by hand is running.
func (d *Delivery) BatchState() BatchState {
	if d.c == nil || d.lane == nil {
		if d.state != nil {
			return d.state()
		}
		if d.fixed != "" {
			return d.fixed
		}
		return BatchRunning
	}
	return d.c.control(d.lane.batch).State
}

// Halt ends when the delivery's batch stops running (paused or cancelled)
// after the job was given its request place: a wait for the host's
// admission ends with it, and the job is not sent. Nil when there is none.
func (d *Delivery) Halt() context.Context { return d.halt }

// DeliveryHalting is a delivery of j, not from a stream, whose batch's
// state is what state says and whose Halt is halt: for handlers' tests
// outside this package.
func DeliveryHalting(j *job.Job, halt context.Context, state func() BatchState) *Delivery {
	return &Delivery{Job: j, halt: halt, state: state}
}

// DeliveryOf is a delivery of j, not from a stream, whose batch is in
// state: for handlers' tests outside this package.
func DeliveryOf(j *job.Job, state BatchState) *Delivery {
	return &Delivery{Job: j, fixed: state}
}

// Handler decides what to do with a delivery. ctx is cancelled only when a
// shutdown's grace period is over.
type Handler func(ctx context.Context, d *Delivery) Decision
