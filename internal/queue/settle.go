package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/retry"
)

// settle carries out a decision. Every path ends the delivery's keepalive.
func (c *Consumer) settle(ctx context.Context, d *Delivery, dec Decision) {
	defer d.keepalive.stop()
	var err error
	switch dec.Action {
	case AckWithResult:
		err = c.complete(ctx, d, dec.Result)
	case NakAfterAttempt:
		c.recordAttempts(ctx, d, dec)
		err = d.msg.NakWithDelay(dec.Delay)
	case NakAfter:
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

// complete stores what a finished job leaves, then acks it, and returns the
// ack's error. A store that fails is logged here and leaves the job unacked:
// it is redelivered once its ack wait passes. A callback message stores no
// result (its job has one), only a dead letter if the callback failed again.
func (c *Consumer) complete(ctx context.Context, d *Delivery, r *job.Result) error {
	if d.Job.Kind == job.KindCallback {
		// A callback message's dead letter is keyed by its sequence: no
		// fingerprint needed.
		if err := c.storeDeadLetter(ctx, d, r, job.Fingerprint{}); err != nil {
			c.deliveryEvent(c.log.Error(), d).Err(err).Msg("storing a re-driven callback's failure failed; it will be redelivered")
			return nil
		}
		return c.ackDurable(ctx, d)
	}
	marker, err := c.storeResult(ctx, d, r)
	if err != nil {
		c.deliveryEvent(c.log.Error(), d).Err(err).Msg("storing result failed; job will be redelivered")
		return nil
	}
	err = c.ackDurable(ctx, d)
	// The marker was published before the ack's round trip, so its answer
	// is in by now: checking costs no wait and no goroutine.
	c.awaitMarker(ctx, d, marker)
	return err
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

// storeResult stores the result, de-duplicated by job and run, then its
// completion marker (without waiting: the returned ack, nil if none was
// sent), then the dead letter of a failure, then the reply_to copy.
// The result goes first: it is the record (the first one stored wins), and
// were the worker to die between the two, the job's resend might succeed;
// a dead letter stored first would then sit beside an ok result, and a
// re-drive would send the job once more. So a reader that sees a failed
// result may find its dead letter a moment later.
func (c *Consumer) storeResult(ctx context.Context, d *Delivery, r *job.Result) (jetstream.PubAckFuture, error) {
	data, err := job.EncodeResultWithin(r, c.payloadLimit())
	if err != nil {
		return nil, fmt.Errorf("encoding result: %w", err)
	}
	fp := c.names.Fingerprint(d.Job) // computed once: result, marker and dead letter are keyed by it
	ack, err := c.publishDurable(ctx, c.names.ResultSubject(r.Batch), ResultID(d.Job, fp), data)
	if err != nil {
		return nil, fmt.Errorf("storing result: %w", err)
	}
	marker := c.storeMarker(d, r, fp, ack.Sequence) // a duplicate's ack carries the original's sequence
	if err := c.storeDeadLetter(ctx, d, r, fp); err != nil {
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

// storeMarker publishes the job's completion marker asynchronously and
// returns its pending ack, or nil if it could not be sent. Waiting here
// would add a round trip to every job; a lost marker costs only the
// protection of a re-run after the dedup window.
func (c *Consumer) storeMarker(d *Delivery, r *job.Result, fp job.Fingerprint, resultSeq uint64) jetstream.PubAckFuture {
	value, err := json.Marshal(DoneMarker{
		ID: r.ID, FP: fp, Batch: r.Batch, Seq: resultSeq,
		OK: r.OK, Attempts: r.Attempts, Reason: r.Reason, Run: d.Job.Redrive,
	})
	var f jetstream.PubAckFuture
	if err == nil {
		f, err = c.js.PublishMsgAsync(&nats.Msg{Subject: c.names.doneSubject(DoneKeyOf(r.ID, fp)), Data: value})
	}
	if err != nil {
		c.log.Warn().Err(err).Str("job", r.ID).Msg("completion marker not stored")
		return nil
	}
	return f
}

// markerWait bounds how long settling waits for a marker's ack that did not
// come with the job's own ack.
const markerWait = 5 * time.Second

// awaitMarker reports a completion marker the broker did not store.
func (c *Consumer) awaitMarker(ctx context.Context, d *Delivery, f jetstream.PubAckFuture) {
	if f == nil {
		return
	}
	select {
	case <-f.Ok():
		return // the usual case, with no timer to arm
	default:
	}
	t := time.NewTimer(markerWait)
	defer t.Stop()
	var err error
	select {
	case <-f.Ok():
		return
	case err = <-f.Err():
	case <-ctx.Done():
		return
	case <-t.C:
		err = errors.New("no answer within " + markerWait.String())
	}
	c.deliveryEvent(c.log.Warn(), d).Err(err).Msg("completion marker not stored; enqueueing this job again after the dedup window would send it again")
}

// storeDeadLetter stores the dead letter the settled delivery leaves, if
// any (deadLetterOf).
func (c *Consumer) storeDeadLetter(ctx context.Context, d *Delivery, r *job.Result, fp job.Fingerprint) error {
	dl, dedup, err := deadLetterOf(d.Job, fp, d.msg.Data(), d.Seq, r)
	if err != nil || dedup == "" {
		return err
	}
	err = c.publishDeadLetter(ctx, r.Batch, dedup, dl, "the job is too large to keep with its failure under the server's maximum payload; enqueue it again")
	if errors.Is(err, nats.ErrMaxPayload) {
		// It will never fit, and the result, the record, is stored:
		// settle the job rather than send it again every ack wait.
		c.deliveryEvent(c.log.Error(), d).Err(err).Msg("dead letter too large to store; the job's result is stored")
	} else if err != nil {
		return fmt.Errorf("storing dead letter: %w", err)
	}
	return nil
}

// publishDeadLetter stores dl, cut to the payload limit (encodeDeadLetter,
// omitted saying why if the job must be left out), on batch's dead-letter
// subject. An error wrapping nats.ErrMaxPayload means it can never fit.
func (c *Consumer) publishDeadLetter(ctx context.Context, batch, dedup string, dl DeadLetter, omitted string) error {
	b, err := encodeDeadLetter(dl, c.payloadLimit(), omitted)
	if err != nil {
		return err
	}
	_, err = c.publishDurable(ctx, c.names.DLQSubject(batch), dedup, b)
	return err
}

// publishDurable publishes with a de-duplication id and waits for the
// stream to store it, retrying while the broker is unreachable; a message
// too large is final.
func (c *Consumer) publishDurable(ctx context.Context, subject, msgID string, data []byte) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	var ack *jetstream.PubAck
	err := retry.Do(ctx, retry.Policy{
		PerTry: 2 * time.Second,
		Pause:  brokerPause,
		Final:  func(err error) bool { return errors.Is(err, nats.ErrMaxPayload) },
		OnRetry: func(err error, try int) {
			c.log.Warn().Err(err).Int("try", try).Str("subject", subject).Msg("publish failed; retrying")
		},
	}, func(ctx context.Context) (err error) {
		ack, err = c.js.PublishMsg(ctx, msg)
		return err
	})
	return ack, err
}

// ackDurable acknowledges a job whose result is stored and waits for the
// server to confirm it, retrying while the broker is unreachable. A plain Ack
// is fire-and-forget: one that reaches a server while it shuts JetStream down
// is dropped, and the job would be sent to its target again after its ack
// wait. The confirmation costs a reply per job, not a slot: settling runs
// after the job's request slot is released.
func (c *Consumer) ackDurable(ctx context.Context, d *Delivery) error {
	return retry.Do(ctx, retry.Policy{
		PerTry: 5 * time.Second,
		Pause:  brokerPause,
		OnRetry: func(err error, try int) {
			c.log.Warn().Err(err).Int("try", try).Uint64("seq", d.Seq).Msg("ack not confirmed; retrying")
		},
	}, func(ctx context.Context) error {
		if err := d.msg.DoubleAck(ctx); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return err
		}
		return nil
	})
}
