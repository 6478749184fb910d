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

	"github.com/jetpost/jetpost/pkg/job"
)

// ResultID is the de-duplication id of a job's result: one result per job
// and run (a re-drive is a new run).
func ResultID(j *job.Job) string {
	id := j.Batch + "/" + j.ID
	if j.Redrive > 0 {
		id += "/r" + strconv.Itoa(j.Redrive)
	}
	return id
}

// StoredDeadLetter is a dead letter with its place in the stream.
type StoredDeadLetter struct {
	DeadLetter
	Seq uint64 // sequence in the dead-letter stream
}

// DeadLetters calls fn for every dead letter of batch ("" for all batches)
// currently in the stream, in order, and stops at the end of the stream.
func DeadLetters(ctx context.Context, js jetstream.JetStream, n Names, batch string, fn func(StoredDeadLetter) error) error {
	subject := n.Prefix + ".dlq.>"
	if batch != "" {
		subject = n.DLQSubject(batch)
	}
	return readAll(ctx, js, n.DLQStream(), subject, func(m jetstream.Msg, seq uint64) error {
		var dl StoredDeadLetter
		if err := json.Unmarshal(m.Data(), &dl.DeadLetter); err != nil {
			return fmt.Errorf("dead letter %d: %w", seq, err)
		}
		dl.Seq = seq
		return fn(dl)
	})
}

// readAll reads every message on subject that exists now, with an ordered
// consumer, stopping once it reaches the last one.
func readAll(ctx context.Context, js jetstream.JetStream, stream, subject string, fn func(jetstream.Msg, uint64) error) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	var total uint64
	for _, c := range info.State.Subjects {
		total += c
	}
	if total == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return fmt.Errorf("reading %s: %w", subject, err)
	}
	for read := uint64(0); read < total; read++ {
		msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		got := false
		for m := range msgs.Messages() {
			got = true
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			if err := fn(m, md.Sequence.Stream); err != nil {
				return err
			}
			// Messages may have expired or been removed since we counted.
			if md.NumPending == 0 {
				return nil
			}
		}
		if err := msgs.Error(); err != nil {
			return err
		}
		if !got {
			return nil
		}
	}
	return nil
}

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
		j, err := redriven(dl, now)
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
		// A job's next run has the id a re-run would give it (RunMsgID). A
		// callback is re-sent once per dead letter.
		msgID := RunMsgID(j.ID, j.Batch, j.Redrive)
		if j.Kind == job.KindCallback {
			msgID = j.ID + "/callback/" + strconv.FormatUint(dl.Seq, 10)
		}
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
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

// redriven is the message that re-drives dl, validated as a worker will.
// A callback message keeps its job's run number, on which the callback's
// idempotency key depends: a re-sent callback is the same callback.
func redriven(dl StoredDeadLetter, now time.Time) (*job.Job, error) {
	if dl.Reason != job.ReasonCallbackFailed {
		j, err := job.Decode(dl.Job)
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
