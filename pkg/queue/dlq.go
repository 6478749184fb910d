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
	Redriven int
	Skipped  []string // dead letters that cannot be re-driven, with the reason
}

// Redrive re-publishes every re-drivable dead letter of batch as a fresh
// job (new attempts, new age, a run number of its own so its result is not
// taken for a duplicate) and deletes it from the dead-letter stream once the
// jobs stream has stored it. Invalid messages are skipped: sending them again
// cannot help.
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
		j, err := job.Decode(dl.Job)
		if err != nil {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("dead letter %d (%s): not a valid job: %v", dl.Seq, dl.Result.ID, err))
			continue
		}
		j.Redrive++
		j.EnqueuedAt = now
		data, err := job.Encode(j)
		if err != nil {
			return rep, err
		}
		msg := nats.NewMsg(n.JobSubject(j.Batch))
		msg.Data = data
		// The id alone would be dropped as a duplicate within the dedup
		// window; the dead letter's sequence makes each re-drive distinct
		// and a repeated re-drive of the same letter idempotent.
		msg.Header.Set(jetstream.MsgIDHeader, j.ID+"/redrive/"+strconv.FormatUint(dl.Seq, 10))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			return rep, fmt.Errorf("re-publishing %s: %w", j.ID, err)
		}
		if err := dlq.DeleteMsg(ctx, dl.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return rep, fmt.Errorf("removing dead letter %d after re-drive: %w", dl.Seq, err)
		}
		rep.Redriven++
	}
	return rep, nil
}
