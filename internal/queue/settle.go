package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
		d.remember(c.recordAttempts(ctx, d, dec))
		err = c.nakDurable(ctx, d, dec.Delay)
	case NakAfter:
		if dec.TurnedAway > d.TurnedAway {
			d.remember(c.recordAttempts(ctx, d, dec))
			err = c.nakDurable(ctx, d, dec.Delay)
		} else {
			d.remember(d.counts())
			err = c.park(ctx, d, dec.Delay)
		}
	case HandBack:
		d.remember(d.counts())
		// One short try: a shutdown does not wait on a broker that is
		// gone (the job then comes back after its ack wait).
		hctx, cancel := context.WithTimeout(ctx, ackTry)
		err = c.nakDurable(hctx, d, 0)
		cancel()
	}
	if err != nil {
		c.failed.settling.Add(1)
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
			c.failed.results.Add(1)
			c.deliveryEvent(c.log.Error(), d).Err(err).Msg("storing a re-driven callback's failure failed; it will be redelivered")
			return nil
		}
		return c.ackDurable(ctx, d)
	}
	marker, err := c.storeResult(ctx, d, r)
	if err != nil {
		c.failed.results.Add(1)
		c.deliveryEvent(c.log.Error(), d).Err(err).Msg("storing result failed; job will be redelivered")
		return nil
	}
	if marker == nil {
		return c.ackDurable(ctx, d)
	}
	if merr := c.awaitMarker(ctx, marker); merr != nil {
		// Lost with a server that stopped, most often. Without it, the
		// redelivery of a job whose ack was lost too, or the job enqueued
		// again after the dedup window, would be sent again.
		if merr = c.storeMarkerDurable(ctx, d, marker); merr != nil {
			c.deliveryEvent(c.log.Warn(), d).Err(merr).Msg("completion marker not stored; enqueueing this job again after the dedup window would send it again")
			// Nothing would settle a redelivery: the ack must be sure.
			return c.ackDurable(ctx, d)
		}
	}
	return c.ackStored(d)
}

// ackStored acknowledges a job whose result and completion marker are both
// stored, without waiting for the server's confirmation: should the ack be
// lost (with a server that stopped, or a consumer leader), it is sent
// again on the signs of that (reack.go); failing those, the job comes back
// after its ack wait, and the redelivery finds the marker naming this job
// message and is settled from the stored result (process, checkEarly),
// never sent again. The confirmation would
// cost a reply, a timer and a context per job.
func (c *Consumer) ackStored(d *Delivery) error {
	// Remembered first: one that cannot even be written (the
	// reconnect buffer full) is sent again when the connection is back.
	d.lane.acks.add(sentAck{reply: d.msg.Reply(), at: c.now(), consumer: d.consumer})
	if err := d.msg.Ack(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		return err
	}
	return nil
}

// settleFinished acknowledges a redelivered job whose result is stored:
// an earlier delivery finished it and its ack was lost (with a server that
// stopped, or given up on). Nothing is sent again.
func (c *Consumer) settleFinished(ctx context.Context, d *Delivery) {
	defer d.keepalive.stop()
	c.deliveryEvent(c.log.Info(), d).Msg("job already finished; its stored result settles this redelivery")
	if err := c.ackDurable(ctx, d); err != nil {
		c.deliveryEvent(c.log.Warn(), d).Err(err).Msg("acknowledging a finished job failed; it will be redelivered")
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

// storeResult stores the result, de-duplicated by job and run, then its
// completion marker (without waiting: the returned ack, nil if none was
// sent), then the dead letter of a failure, then the reply_to copy.
// The result goes first: it is the record (the first one stored wins), and
// were the worker to die between the two, the job's resend might succeed;
// a dead letter stored first would then sit beside an ok result, and a
// re-drive would send the job once more. So a reader that sees a failed
// result may find its dead letter a moment later.
func (c *Consumer) storeResult(ctx context.Context, d *Delivery, r *job.Result) (*pendingMarker, error) {
	data, err := job.EncodeResultWithin(r, c.payloadLimit())
	if err != nil {
		return nil, fmt.Errorf("encoding result: %w", err)
	}
	fp := d.fp
	ack, err := c.publishDurable(ctx, c.names.ResultSubject(r.Batch), ResultID(d.Job, fp), data)
	if err != nil {
		return nil, fmt.Errorf("storing result: %w", err)
	}
	marker := c.storeMarker(d, r, fp, ack.Sequence) // a duplicate's ack carries the original's sequence
	if LeavesDeadLetter(r) {
		if err := c.storeDeadLetter(ctx, d, r, fp); err != nil {
			if !r.OK {
				return nil, err
			}
			// The job succeeded and its result is stored: leaving it
			// unacked for want of its callback's dead letter would send
			// the request again, which is worse than losing the letter.
			c.deliveryEvent(c.log.Error(), d).Err(err).Msg("storing the failed callback's dead letter failed; the job's result is stored")
		}
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

// pendingMarker is a completion marker published without waiting.
type pendingMarker struct {
	subject string
	value   []byte
	ack     jetstream.PubAckFuture // nil if it could not be sent
}

// storeMarker publishes the job's completion marker asynchronously, so
// that the dead letter and reply_to copy of a failure go out meanwhile;
// complete waits for it before the ack, which it makes safe to lose.
func (c *Consumer) storeMarker(d *Delivery, r *job.Result, fp job.Fingerprint, resultSeq uint64) *pendingMarker {
	value, err := json.Marshal(DoneMarker{
		ID: r.ID, FP: fp, Batch: r.Batch, Seq: resultSeq,
		OK: r.OK, Attempts: r.Attempts, Reason: r.Reason, Run: d.Job.Redrive, JobSeq: d.Seq, JobTime: unixNanos(d.stored),
	})
	if err != nil {
		return nil // plain fields: cannot happen
	}
	m := &pendingMarker{subject: c.names.doneSubject(DoneKeyOf(r.ID, fp)), value: value}
	m.ack, _ = c.js.PublishMsgAsync(&nats.Msg{Subject: m.subject, Data: value})
	return m
}

// markerWait bounds how long settling waits for a marker's ack: the job is
// acked only once its marker is stored.
const markerWait = 5 * time.Second

// awaitMarker returns why a completion marker was not stored, or nil.
func (c *Consumer) awaitMarker(ctx context.Context, m *pendingMarker) error {
	if m == nil {
		return nil
	}
	if m.ack == nil {
		return errors.New("not sent")
	}
	select {
	case <-m.ack.Ok():
		return nil // already in: no timer to arm
	default:
	}
	t := time.NewTimer(markerWait)
	defer t.Stop()
	select {
	case <-m.ack.Ok():
		return nil
	case err := <-m.ack.Err():
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("no answer within " + markerWait.String())
	}
}

// storeMarkerDurable stores a marker whose asynchronous publish failed,
// retrying while the broker is unreachable.
func (c *Consumer) storeMarkerDurable(ctx context.Context, d *Delivery, m *pendingMarker) error {
	_, err := c.publishDurable(ctx, m.subject, "done/"+strconv.FormatUint(d.Seq, 10), m.value)
	return err
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
//
// Each try is short: an ack sent to a consumer leader that died is never
// answered, and the retry reaches its successor. The tries stop after
// ackRetryLimit (or the ack wait, if shorter): by then the job is due to
// come back anyway, and its stored result settles the redelivery, while a
// worker retrying forever would keep its window full and stop pulling.
func (c *Consumer) ackDurable(ctx context.Context, d *Delivery) error {
	ctx, cancel := context.WithTimeout(ctx, min(c.cfg.AckWait, ackRetryLimit))
	defer cancel()
	return retry.Do(ctx, retry.Policy{
		PerTry: ackTry,
		Pause:  brokerPause,
		OnRetry: func(err error, try int) {
			c.log.Warn().Err(err).Int("try", try).Uint64("seq", d.Seq).Msg("ack not confirmed; retrying")
			// Most often the consumer's leader was lost: deliveries may
			// have gone with it.
			c.rescueSoon()
		},
	}, func(ctx context.Context) error {
		if err := d.msg.DoubleAck(ctx); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return err
		}
		return nil
	})
}

// nakDurable returns a job to JetStream, to come back after delay, and
// waits for the server to confirm it, like ackDurable: a NAK lost with a
// consumer leader would leave the job pending until its ack wait. The
// rescue spares the job until it is due.
func (c *Consumer) nakDurable(ctx context.Context, d *Delivery, delay time.Duration) error {
	d.due = c.now().Add(delay)
	body := nakBody(delay)
	ctx, cancel := context.WithTimeout(ctx, min(c.cfg.AckWait, ackRetryLimit))
	defer cancel()
	return retry.Do(ctx, retry.Policy{
		PerTry: ackTry,
		Pause:  brokerPause,
		OnRetry: func(err error, try int) {
			c.log.Warn().Err(err).Int("try", try).Uint64("seq", d.Seq).Msg("NAK not confirmed; retrying")
			c.rescueSoon()
		},
	}, func(ctx context.Context) error {
		_, err := c.js.Conn().RequestWithContext(ctx, d.msg.Reply(), body)
		return err
	})
}

// park returns a job that sent nothing and spent nothing (its host's
// limits were full) to come back after delay, without waiting for the
// server's confirmation: at 0 ms against one host about every job is
// parked once. A park lost with a server only delays the job to its ack
// wait, or to a rescue, which spares it until it is due; it cannot send
// it twice. A NAK that cannot even be written is retried as nakDurable.
func (c *Consumer) park(ctx context.Context, d *Delivery, delay time.Duration) error {
	d.due = c.now().Add(delay)
	if err := d.msg.NakWithDelay(delay); err == nil {
		return nil
	}
	return c.nakDurable(ctx, d, delay)
}

// nakBody is a NAK's payload, with its delay if any.
func nakBody(delay time.Duration) []byte {
	if delay > 0 {
		return fmt.Appendf(nil, "-NAK {\"delay\": %d}", delay.Nanoseconds())
	}
	return []byte("-NAK")
}

const (
	ackTry        = 2 * time.Second
	ackRetryLimit = time.Minute
)
