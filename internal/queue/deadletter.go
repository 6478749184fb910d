package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// DeadLetter is the record on the dead-letter stream: the final result and
// the job message exactly as it was, so it can be re-driven (unless it was
// too large to keep, see JobOmitted).
type DeadLetter struct {
	// Reason is why it is here: the result's reason for a failed job or
	// invalid message, job.ReasonCallbackFailed for a job whose callback
	// finally failed (Job is then the callback message). Empty means the
	// result's reason.
	Reason    job.Reason      `json:"reason,omitempty"`
	Result    job.Result      `json:"result"`
	Job       json.RawMessage `json:"job,omitempty"`
	StreamSeq uint64          `json:"stream_seq"`
	// JobOmitted, when set, says why Job is empty: the job was too large
	// to be kept with its failure.
	JobOmitted string `json:"job_omitted,omitempty"`
}

// LeavesDeadLetter reports whether a settled job with result r leaves a
// dead letter: its own when it failed, its callback's when that finally
// failed; none when it was cancelled (it failed on purpose: nothing to
// re-drive).
func LeavesDeadLetter(r *job.Result) bool {
	return r.Reason != job.ReasonCancelled && (!r.OK || (r.Callback != nil && !r.Callback.OK))
}

// deadLetterOf returns the dead letter a settled job leaves and its
// de-duplication id, or no id when it leaves none. A failed job's keeps the
// job message as it was, for a re-drive of the job. A job that succeeded
// but whose callback finally failed, and a re-driven callback that failed
// again, keep the callback message without its result (the result is
// beside it), for a re-drive of the callback alone: the job's result
// stands. A failed job's callback is not dead-lettered apart: re-driving
// the job sends its new result to the callback. fp is the job's
// fingerprint.
func deadLetterOf(j *job.Job, fp job.Fingerprint, msg []byte, seq uint64, r *job.Result) (DeadLetter, string, error) {
	if !LeavesDeadLetter(r) {
		return DeadLetter{}, "", nil // the common case: no id to build
	}
	dedup := ResultID(j, fp)
	if j.Kind == job.KindCallback {
		dedup = callbackDeadLetterID(j, seq)
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

// encodeDeadLetter encodes the dead letter of a failed job (or invalid message)
// within limit bytes. The job is kept whole, as a re-drive needs it; the
// result's body, stored with the result anyway, gives way first. Only a job
// too close to the limit to share a message with its failure is left out,
// JobOmitted saying so with omitted, and then the failure's free text is
// cut to fit too. A dead letter that cannot fit even so (an absurdly small
// maximum payload) is an error wrapping nats.ErrMaxPayload.
func encodeDeadLetter(dl DeadLetter, limit int, omitted string) ([]byte, error) {
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
		b, err := marshalDeadLetter(dl)
		if err != nil || len(b) <= limit {
			return b, err
		}
		if i == len(steps) {
			return nil, fmt.Errorf("dead letter of %d bytes, over the limit of %d even cut down: %w", len(b), limit, nats.ErrMaxPayload)
		}
		steps[i]()
	}
}

// marshalDeadLetter keeps the job message byte for byte (encoding/json
// would compact and HTML-escape it): a re-drive sends the body the file had.
func marshalDeadLetter(dl DeadLetter) ([]byte, error) {
	msg := dl.Job
	dl.Job = nil
	b, err := json.Marshal(dl)
	if err != nil || len(msg) == 0 {
		return b, err
	}
	return job.WithRawField(b, "job", msg), nil
}

// StoredDeadLetter is a dead letter with its place in the stream.
type StoredDeadLetter struct {
	DeadLetter
	Seq uint64 // sequence in the dead-letter stream
}

// DeadLetters calls fn for every dead letter of batch ("" for all batches)
// currently in the stream, in order, and stops at the end of the stream.
func DeadLetters(ctx context.Context, js jetstream.JetStream, n Names, batch string, fn func(StoredDeadLetter) error) error {
	r := streamRead{stream: n.DLQStream(), subject: n.DLQSubject(anyBatch), what: "dead letters", upToNow: true}
	if batch != "" {
		r.subject, r.what = n.DLQSubject(batch), "dead letters of batch "+batch
	}
	return readStream(ctx, js, r, func(seq uint64, data []byte) (bool, error) {
		dl := StoredDeadLetter{Seq: seq}
		if err := json.Unmarshal(data, &dl.DeadLetter); err != nil {
			return true, fmt.Errorf("dead letter %d: %w", seq, err)
		}
		return false, fn(dl)
	})
}

// RetireDeadLetters deletes the dead letters of batch whose failed result
// match accepts, and returns how many it deleted. A job sent again by a
// re-run is retired from the dead-letter stream as a re-drive retires it,
// so that a later re-drive does not send it once more.
func RetireDeadLetters(ctx context.Context, js jetstream.JetStream, n Names, batch string, match func(r *job.Result) bool) (int, error) {
	dlq, err := js.Stream(ctx, n.DLQStream())
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", n.DLQStream(), err)
	}
	var seqs []uint64
	err = DeadLetters(ctx, js, n, batch, func(dl StoredDeadLetter) error {
		if match(&dl.Result) {
			seqs = append(seqs, dl.Seq)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	deleted := 0
	for _, seq := range seqs {
		err := dlq.DeleteMsg(ctx, seq)
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return deleted, fmt.Errorf("removing dead letter %d: %w", seq, err)
		}
		deleted++
	}
	return deleted, nil
}
