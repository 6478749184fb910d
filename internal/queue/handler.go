package queue

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
