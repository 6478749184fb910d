package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
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

// Publisher publishes jobs asynchronously with a bounded number of
// unacknowledged publishes, so enqueue runs at broker speed with flat memory.
// It is not safe for concurrent Publish calls.
type Publisher struct {
	js      jetstream.JetStream
	names   Names
	pending chan pendingPub
	done    chan struct{}
	// OnAck, if set, is called (from one goroutine) for every job the
	// broker has answered for: stored, duplicate, or failed.
	onAck func(id string, duplicate bool, err error)

	mu    sync.Mutex
	stats PublishStats
}

type pendingPub struct {
	id  string
	msg *nats.Msg
	f   jetstream.PubAckFuture
}

// publishTries is how often a publish that timed out or met no responder is
// tried again: a broker restarting or electing a leader answers nothing for a
// moment. Republishing is safe because the stream de-duplicates by job id.
const publishTries = 5

// NewPublisher returns a Publisher that keeps at most window publishes
// unacknowledged. js should allow at least that many pending async
// publishes (jetstream.WithPublishAsyncMaxPending).
func NewPublisher(js jetstream.JetStream, n Names, window int, onAck func(id string, duplicate bool, err error)) *Publisher {
	if window < 1 {
		window = 1
	}
	p := &Publisher{js: js, names: n, pending: make(chan pendingPub, window), done: make(chan struct{}), onAck: onAck}
	go p.collect()
	return p
}

// Publish sends one job (Batch and ID set). It blocks while the window of
// unacknowledged publishes is full.
func (p *Publisher) Publish(ctx context.Context, j *job.Job) error {
	data, err := job.Encode(j)
	if err != nil {
		return fmt.Errorf("encoding job %q: %w", j.ID, err)
	}
	msg := nats.NewMsg(p.names.JobSubject(j.Batch))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, j.ID)
	f, err := p.publishAsync(ctx, msg)
	if err != nil {
		return fmt.Errorf("publishing job %q: %w", j.ID, err)
	}
	select {
	case p.pending <- pendingPub{id: j.ID, msg: msg, f: f}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publishAsync retries the library's "too many stalled" refusal, which only
// means the broker is slower than we are right now.
func (p *Publisher) publishAsync(ctx context.Context, msg *nats.Msg) (jetstream.PubAckFuture, error) {
	for {
		f, err := p.js.PublishMsgAsync(msg)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return f, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.js.PublishAsyncComplete():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// collect waits for the acks in publish order; acks come back roughly in
// order, so one goroutine keeps up and the window stays bounded.
func (p *Publisher) collect() {
	defer close(p.done)
	for pp := range p.pending {
		dup, err := p.await(pp)
		p.mu.Lock()
		switch {
		case err != nil:
			p.stats.Failed = append(p.stats.Failed, &PublishError{ID: pp.id, Err: err})
		case dup:
			p.stats.Duplicates++
		default:
			p.stats.Published++
		}
		p.mu.Unlock()
		if p.onAck != nil {
			p.onAck(pp.id, dup, err)
		}
	}
}

func (p *Publisher) await(pp pendingPub) (duplicate bool, err error) {
	f := pp.f
	for try := 1; ; try++ {
		select {
		case ack := <-f.Ok():
			return ack.Duplicate, nil
		case err = <-f.Err():
		}
		if !retryable(err) || try >= publishTries {
			return false, err
		}
		time.Sleep(time.Duration(try) * 200 * time.Millisecond)
		if f, err = p.js.PublishMsgAsync(pp.msg); err != nil {
			return false, err
		}
	}
}

func retryable(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout)
}

// Close waits for every outstanding publish to be acknowledged (or finally
// refused) and returns the totals.
func (p *Publisher) Close() PublishStats {
	close(p.pending)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}
