package queue

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// inbound decodes a delivered message and holds it to what a message on the
// jobs subject may claim, whoever published it: anyone who may publish
// there is a producer, but no more than one. The batch is the subject's
// (the stream filed it there, results and completion markers go there), the
// deployment's Policy applies as it does to enqueue's lines, and the age of
// a job counts from when the stream stored it at the latest, so a job that
// claims to be from the future, or from no time at all, still expires.
func (c *Consumer) inbound(msg jetstream.Msg, stored time.Time) (*job.Job, error) {
	j, err := job.Decode(msg.Data())
	if err != nil {
		return j, err
	}
	if batch := c.names.batchOfJob(msg.Subject()); j.Batch != batch {
		return j, fmt.Errorf("invalid job %q: it names batch %q but was published for batch %q", job.Cut(j.ID, 64), job.Cut(j.Batch, 64), batch)
	}
	if err := c.cfg.Policy.Check(j); err != nil {
		return j, fmt.Errorf("invalid job %q: %w", job.Cut(j.ID, 64), err)
	}
	if !stored.IsZero() && (j.EnqueuedAt.IsZero() || j.EnqueuedAt.After(stored)) {
		j.EnqueuedAt = stored.UTC()
	}
	return j, nil
}
