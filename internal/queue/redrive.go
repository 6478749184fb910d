package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// RedriveReport says what a re-drive did.
type RedriveReport struct {
	Redriven  int      // failed jobs published again, to be sent afresh
	Callbacks int      // failed callbacks published again, to POST the stored result only
	Skipped   []string // dead letters that cannot be re-driven, with the reason
}

// Redrive re-publishes every re-drivable dead letter of batch and deletes it
// from the dead-letter stream once the jobs stream has stored it. A failed
// job goes back as a fresh job (new attempts, new age, a run number of its
// own so its result is not taken for a duplicate). A failed callback goes
// back as a callback message holding the job's stored result: a worker
// POSTs it to the callback again and sends nothing else, and the job's
// result stays the one stored. Invalid messages are skipped: sending them
// again cannot help.
func Redrive(ctx context.Context, js jetstream.JetStream, n Names, batch string) (RedriveReport, error) {
	var rep RedriveReport
	dlq, err := js.Stream(ctx, n.DLQStream())
	if err != nil {
		return rep, err
	}
	var todo []StoredDeadLetter
	err = DeadLetters(ctx, js, n, batch, func(dl StoredDeadLetter) error {
		todo = append(todo, dl)
		return nil
	})
	if err != nil {
		return rep, err
	}
	now := time.Now().UTC()
	for _, dl := range todo {
		if dl.JobOmitted != "" {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("dead letter %d (%s): %s", dl.Seq, dl.Result.ID, dl.JobOmitted))
			continue
		}
		j, err := redriven(dl, now, n.SecretHeaders)
		if err != nil {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("dead letter %d (%s): not a valid job: %v", dl.Seq, dl.Result.ID, err))
			continue
		}
		data, err := job.Encode(j)
		if err != nil {
			return rep, err
		}
		msg := nats.NewMsg(n.JobSubject(j.Batch))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, n.redriveMsgID(j, dl.Seq))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			return rep, fmt.Errorf("re-publishing %s: %w", j.ID, err)
		}
		if err := dlq.DeleteMsg(ctx, dl.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return rep, fmt.Errorf("removing dead letter %d after re-drive: %w", dl.Seq, err)
		}
		if j.Kind == job.KindCallback {
			rep.Callbacks++
		} else {
			rep.Redriven++
		}
	}
	return rep, nil
}

// redriven is the message that re-drives dl, validated as a worker will
// (a job another producer published keeps the defaults and the derived id
// a worker gave it; secretHeaders as for Names). A callback message keeps
// its job's run number, on which the callback's idempotency key depends: a
// re-sent callback is the same callback.
func redriven(dl StoredDeadLetter, now time.Time, secretHeaders []string) (*job.Job, error) {
	if dl.Reason != job.ReasonCallbackFailed {
		j, err := job.DecodeMessage(dl.Job, dl.Result.Batch, secretHeaders)
		if err != nil {
			return nil, err
		}
		j.Redrive++
		j.EnqueuedAt = now
		return j, nil
	}
	var j job.Job
	if err := json.Unmarshal(dl.Job, &j); err != nil {
		return nil, fmt.Errorf("decoding callback message: %w", err)
	}
	r := dl.Result
	r.Callback = nil // the record as the first POST sent it
	cm := j.CallbackMessage(&r)
	cm.EnqueuedAt = now
	data, err := job.Encode(cm)
	if err != nil {
		return nil, err
	}
	return job.Decode(data)
}
