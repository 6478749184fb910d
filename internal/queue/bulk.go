package queue

import (
	"context"
	"errors"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/retry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BulkMsg is one job already encoded for the wire.
type BulkMsg struct {
	ID string // job id
	// FP is the fingerprint of the job's request: with ID, its identity.
	FP      job.Fingerprint
	MsgID   string // de-duplication id (Nats-Msg-Id); empty means JobMsgID(ID, FP)
	Subject string
	Data    []byte
}

// BulkAck is the broker's final answer for one BulkMsg.
type BulkAck struct {
	Msg *BulkMsg
	// Seq is the job's stream sequence; for a duplicate, the sequence of
	// the job stored earlier with the same de-duplication id.
	Seq       uint64
	Duplicate bool
	Err       error // the broker finally refused it, after retries
}

// BulkPublisher publishes encoded jobs asynchronously with a bounded window
// of unacknowledged publishes: enqueue runs at broker speed with flat
// memory. Answers are handed to onAck in publish order, from one goroutine.
// It is not safe for concurrent Publish calls.
//
// A publish that times out, meets no responder or loses its connection is
// sent again (the stream de-duplicates, so that is safe) up to BulkTries
// times; the library's "too many stalled" refusal only means the broker is
// slower than we are, and is waited out without limit.
type BulkPublisher struct {
	ctx     context.Context
	js      jetstream.JetStream
	pending chan bulkPending
	done    chan struct{}
	onAck   func(BulkAck)
	headers nats.Header // SetHeaders': on every message
}

type bulkPending struct {
	m *BulkMsg
	f jetstream.PubAckFuture
}

// BulkTries is how often one job is sent before its failure is final.
const BulkTries = 6

// NewBulkPublisher returns a publisher that keeps at most window publishes
// unacknowledged. js should allow at least that many pending async
// publishes (jetstream.WithPublishAsyncMaxPending) and time out lost acks
// (jetstream.WithPublishAsyncTimeout). Once ctx ends, retries stop and
// publishes still unanswered are reported with ctx's error.
func NewBulkPublisher(ctx context.Context, js jetstream.JetStream, window int, onAck func(BulkAck)) *BulkPublisher {
	p := &BulkPublisher{
		ctx: ctx, js: js, pending: make(chan bulkPending, max(window, 1)), done: make(chan struct{}), onAck: onAck,
	}
	go p.collect()
	return p
}

func (m *BulkMsg) natsMsg() *nats.Msg {
	id := m.MsgID
	if id == "" {
		id = JobMsgID(m.ID, m.FP)
	}
	// A literal header saves the canonicalisation of Header.Set; the key is
	// already canonical.
	return &nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
}

// Publish sends one message. It blocks while the window is full, and fails
// only when ctx ends or the connection is closed for good; refusals of the
// message itself are reported through onAck.
func (p *BulkPublisher) Publish(ctx context.Context, m *BulkMsg) error {
	f, err := p.send(ctx, m)
	if err != nil {
		return err
	}
	select {
	case p.pending <- bulkPending{m: m, f: f}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send publishes, waiting out stalls.
func (p *BulkPublisher) send(ctx context.Context, m *BulkMsg) (jetstream.PubAckFuture, error) {
	msg := m.natsMsg()
	p.addHeaders(msg)
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

func (p *BulkPublisher) collect() {
	defer close(p.done)
	for pp := range p.pending {
		a := p.await(pp)
		if p.onAck != nil {
			p.onAck(a)
		}
	}
}

func (p *BulkPublisher) await(pp bulkPending) BulkAck {
	f := pp.f
	a := BulkAck{Msg: pp.m}
	for try := 1; ; try++ {
		select {
		case ack := <-f.Ok():
			a.Seq, a.Duplicate = ack.Sequence, ack.Duplicate
			return a
		case a.Err = <-f.Err():
		case <-p.ctx.Done():
			a.Err = p.ctx.Err()
			return a
		}
		if !retryablePublish(a.Err) || try >= BulkTries {
			return a
		}
		_ = retry.Sleep(p.ctx, retry.Linear(try, 200*time.Millisecond, 0))
		var err error
		if f, err = p.send(p.ctx, pp.m); err != nil {
			a.Err = err
			return a
		}
	}
}

// retryablePublish reports whether sending a publish again may succeed:
// the broker did not answer, or the connection was lost or stalled.
func retryablePublish(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, jetstream.ErrTooManyStalledMsgs)
}

// Close waits until every publish has its final answer.
func (p *BulkPublisher) Close() {
	close(p.pending)
	<-p.done
}
