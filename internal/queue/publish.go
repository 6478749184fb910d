package queue

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// PublishError is a job the broker finally refused.
type PublishError struct {
	ID  string
	Err error
}

func (e *PublishError) Error() string { return fmt.Sprintf("job %q: %v", e.ID, e.Err) }
func (e *PublishError) Unwrap() error { return e.Err }

// PublishStats summarises a bulk publish.
type PublishStats struct {
	Published  int // stored as new jobs
	Duplicates int // dropped by the stream: the same id was enqueued within the dedup window
	Failed     []*PublishError
}

// Publisher publishes jobs one by one through a BulkPublisher and keeps
// the totals: the convenient form for callers that hold decoded jobs
// (tests, benchmarks). It is not safe for concurrent Publish calls.
type Publisher struct {
	names Names
	bulk  *BulkPublisher

	mu    sync.Mutex
	stats PublishStats
}

// NewPublisher returns a Publisher that keeps at most window publishes
// unacknowledged. js should allow at least that many pending async
// publishes (jetstream.WithPublishAsyncMaxPending). onAck, if set, is
// called (from one goroutine) for every job the broker has answered for:
// stored, duplicate, or finally refused.
func NewPublisher(js jetstream.JetStream, n Names, window int, onAck func(id string, duplicate bool, err error)) *Publisher {
	p := &Publisher{names: n}
	p.bulk = NewBulkPublisher(context.Background(), js, window, func(a BulkAck) {
		p.mu.Lock()
		switch {
		case a.Err != nil:
			p.stats.Failed = append(p.stats.Failed, &PublishError{ID: a.Msg.ID, Err: a.Err})
		case a.Duplicate:
			p.stats.Duplicates++
		default:
			p.stats.Published++
		}
		p.mu.Unlock()
		if onAck != nil {
			onAck(a.Msg.ID, a.Duplicate, a.Err)
		}
	})
	return p
}

// Publish sends one job (Batch and ID set), de-duplicated by its identity
// (id and request fingerprint). It blocks while the window of
// unacknowledged publishes is full.
func (p *Publisher) Publish(ctx context.Context, j *job.Job) error {
	data, err := job.Encode(j)
	if err != nil {
		return fmt.Errorf("encoding job %q: %w", j.ID, err)
	}
	if err := p.bulk.Publish(ctx, &BulkMsg{ID: j.ID, FP: p.names.Fingerprint(j), Subject: p.names.JobSubject(j.Batch), Data: data}); err != nil {
		return fmt.Errorf("publishing job %q: %w", j.ID, err)
	}
	return nil
}

// Close waits for every outstanding publish to be acknowledged (or finally
// refused) and returns the totals.
func (p *Publisher) Close() PublishStats {
	p.bulk.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}
