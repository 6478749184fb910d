package queue

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetpost/jetpost/pkg/job"
)

// poison settles a message that is not a valid job: it stores a failed
// result (reason invalid), so whoever waits for the batch sees it, and a
// dead letter, then terminates the message: retrying cannot make it valid.
func (c *Consumer) poison(ctx context.Context, d *Delivery) {
	defer d.keepalive.stop()
	batch := c.names.batchOfJob(d.msg.Subject())
	r := invalidResult(d.Job, batch, d.decodeErr, c.cfg.Worker, time.Now().UTC())
	dedup := invalidMsgID(d.Seq)
	if data, err := job.EncodeResultWithin(anonymous(r), c.payloadLimit()); err != nil {
		c.log.Error().Err(err).Uint64("seq", d.Seq).Msg("result of an invalid message not stored")
	} else if _, err := c.publishDurable(ctx, c.names.ResultSubject(batch), dedup, data); err != nil && !errors.Is(err, nats.ErrMaxPayload) {
		c.log.Error().Err(err).Uint64("seq", d.Seq).Msg("storing the result of an invalid message failed; it will be redelivered")
		return
	}
	dl := DeadLetter{Result: *r, Job: rawOrString(d.msg.Data()), StreamSeq: d.Seq, Reason: job.ReasonInvalid}
	err := c.publishDeadLetter(ctx, batch, dedup, dl, "the message is too large to keep with the reason it is invalid")
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

// batchOfJob is the batch of a message on a job subject, or "invalid" when
// the subject names none a valid job could have.
func (n Names) batchOfJob(subject string) string {
	b := strings.TrimPrefix(subject, n.JobSubject(""))
	if job.ValidBatch(b) {
		return b
	}
	return "invalid"
}

// rawOrString keeps an invalid message in a dead letter: as it is if it is
// JSON, else as a JSON string.
func rawOrString(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b)) // a string always marshals
	return s
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
