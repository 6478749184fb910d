package queue

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// inbound decodes a delivered message and holds it to what a message on the
// jobs subject may claim, whoever published it: anyone who may publish
// there is a producer, but no more than one. The message gets the rules
// enqueue applies to a file entry (job.DecodeMessage: defaults,
// normalisation, limits, a derived id), its batch is the subject's (the
// stream filed it there, results and completion markers go there), the
// deployment's Policy applies as it does to enqueue's lines, and the age of
// a job counts from when the stream stored it at the latest, so a job that
// claims to be from the future, or from no time at all, still expires.
func (c *Consumer) inbound(msg jetstream.Msg, stored time.Time) (*job.Job, error) {
	batch := strings.TrimPrefix(msg.Subject(), c.names.JobSubject(""))
	j, err := job.DecodeMessage(msg.Data(), batch, c.names.SecretHeaders)
	if err != nil {
		return j, err
	}
	if err := c.cfg.Policy.Check(j); err != nil {
		return j, fmt.Errorf("invalid job %q: %w", job.Cut(j.ID, 64), err)
	}
	if !stored.IsZero() && (j.EnqueuedAt.IsZero() || j.EnqueuedAt.After(stored)) {
		j.EnqueuedAt = stored.UTC()
	}
	return j, nil
}
