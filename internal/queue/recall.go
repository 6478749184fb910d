package queue

import (
	"time"
)

// A job this worker deferred (a host's limits, a retry, a breaker) comes
// back to it as often as not. Looked up like any redelivery, that is two
// requests per return (its marker and its attempts), and a busy host's
// backlog is parked about once per job. But when the delivery count has
// grown by exactly one since this worker deferred it, from the same
// consumer, nobody else had it in between: no other worker can have sent
// it, counted attempts or stored its result, and what this worker
// remembers is the whole story.
//
// Same consumer means the same creation time: a consumer deleted and made
// again (by the same name) counts deliveries from one again. Workers delete
// a lane's consumer only with nothing pending on it, and a deferred job is
// pending; a lane that finds its consumer gone makes it again and learns
// the new creation time.

// lastDelivery is what this worker knew of a job when it deferred it.
type lastDelivery struct {
	// delivered is the delivery count then; 0 when not remembered.
	delivered uint64
	// consumer is the lane consumer's creation time then.
	consumer             time.Time
	attempts, turnedAway int
	// trace is the traceparent the attempts record names (tracing).
	trace string
}

// remember notes what a deferral of d leaves, if this worker knew its
// counts: rec, the attempts record as it now stands (what recordAttempts
// wrote, or d.counts() when it wrote nothing).
func (d *Delivery) remember(rec attemptsRecord) {
	if !d.countsKnown {
		return
	}
	d.last = lastDelivery{delivered: d.NumDelivered, consumer: d.consumer,
		attempts: rec.Attempts, turnedAway: rec.TurnedAway, trace: rec.Trace}
}

// counts is the attempts record as this delivery found it.
func (d *Delivery) counts() attemptsRecord {
	return attemptsRecord{Attempts: d.Attempts, TurnedAway: d.TurnedAway, Trace: d.PrevTrace}
}

// recall takes the counts of d from what this worker remembers of its last
// delivery, when nobody can have had it since; the lookups are then
// skipped (needsCheck).
func (d *Delivery) recall(last lastDelivery) {
	if last.delivered == 0 || d.consumer.IsZero() || !last.consumer.Equal(d.consumer) || d.NumDelivered != last.delivered+1 {
		return
	}
	d.Attempts, d.TurnedAway, d.PrevTrace = last.attempts, last.turnedAway, last.trace
	d.checked, d.countsKnown = true, true
}
