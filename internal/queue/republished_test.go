package queue_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// A job another producer publishes again after it ran (under another
// Nats-Msg-Id, as after the dedup window) reaches no handler: its
// completion marker says it ran. The same id with another request is
// another job and is handled.
func TestRepublishedJobIsNotHandledAgain(t *testing.T) {
	b := setupConsumer(t)
	j := &job.Job{ID: "r1", Batch: "b", Method: "GET", URL: "https://api.example.com/r1", EnqueuedAt: time.Now().UTC()}
	b.publish(j)
	ok := &job.Result{ID: "r1", Batch: "b", OK: true, Status: 200, Attempts: 1, Worker: "w1", FinishedAt: time.Now().UTC()}
	b.run([]queue.Decision{{Action: queue.AckWithResult, Result: ok}}, nil)

	raw := func(data, msgID string) {
		t.Helper()
		if _, err := b.js.Publish(b.ctx, b.names.JobSubject("b"), []byte(data), jetstream.WithMsgID(msgID)); err != nil {
			t.Fatal(err)
		}
	}
	raw(`{"id":"r1","url":"https://api.example.com/r1"}`, "r1-again")
	b.run(nil, func() bool { return jobsLeft(b) == 0 }) // the handler must not be called

	raw(`{"id":"r1","url":"https://api.example.com/r1?v=2"}`, "r1-v2")
	other := *ok
	b.run([]queue.Decision{{Action: queue.AckWithResult, Result: &other}}, nil)
}

func jobsLeft(b *consumerBundle) uint64 {
	s, err := b.js.Stream(b.ctx, b.names.JobsStream())
	if err != nil {
		return 1
	}
	info, err := s.Info(b.ctx)
	if err != nil {
		return 1
	}
	return info.State.Msgs
}
