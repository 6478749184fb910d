package queue_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// A job's attempts and breaker turn-aways live in the attempts bucket, not
// in a worker: a consumer that never saw the job (another worker, or this
// one restarted after a crash) reads both on the next delivery.
func TestAttemptsAndTurnAwaysSurviveTheConsumer(t *testing.T) {
	leakcheck.AtEnd(t)
	ns := natstest.RunServer(t)
	ctx := context.Background()
	n := queue.NewNames("jetpost")
	streams := queue.StreamConfig{Replicas: 1, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}
	js := jsFor(t, ns.ClientURL())
	if err := queue.Setup(ctx, js, n, streams); err != nil {
		t.Fatal(err)
	}
	pub := queue.NewPublisher(js, n, 1, nil)
	if err := pub.Publish(ctx, &job.Job{ID: "j1", Batch: "b", Method: "GET", URL: "https://example.com/"}); err != nil {
		t.Fatal(err)
	}
	if st := pub.Close(); st.Published != 1 {
		t.Fatalf("published %+v", st)
	}
	type seen struct{ attempts, turned int }
	run := func(h func(d *queue.Delivery, stop func()) queue.Decision) []seen {
		t.Helper()
		cons, err := queue.NewConsumer(ctx, jsFor(t, ns.ClientURL()), n, queue.ConsumerConfig{
			MaxInflight: 1, AckWait: 5 * time.Second, ShutdownTimeout: 5 * time.Second, PullWait: 100 * time.Millisecond,
			Worker: "w", Streams: streams,
		}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var mu sync.Mutex
		var got []seen
		err = cons.Run(rctx, func(_ context.Context, d *queue.Delivery) queue.Decision {
			mu.Lock()
			got = append(got, seen{d.Attempts, d.TurnedAway})
			mu.Unlock()
			return h(d, cancel)
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	// First consumer: turned away once (recorded), then one attempt spent
	// and the consumer goes away.
	first := run(func(d *queue.Delivery, stop func()) queue.Decision {
		if d.TurnedAway == 0 {
			return queue.Decision{Action: queue.NakAfter, TurnedAway: 1}
		}
		stop()
		return queue.Decision{Action: queue.NakAfterAttempt, Attempts: d.Attempts + 1}
	})
	if want := []seen{{0, 0}, {0, 1}}; len(first) != 2 || first[0] != want[0] || first[1] != want[1] {
		t.Fatalf("first consumer saw %v, want %v", first, want)
	}
	// A host limit's Defer raises nothing and must not lose the counts.
	limited := false
	second := run(func(d *queue.Delivery, stop func()) queue.Decision {
		if !limited {
			limited = true
			return queue.Decision{Action: queue.NakAfter}
		}
		stop()
		return queue.Decision{Action: queue.AckWithResult, Result: &job.Result{ID: "j1", Batch: "b", OK: true, Attempts: d.Attempts}}
	})
	if want := []seen{{1, 1}, {1, 1}}; len(second) != 2 || second[0] != want[0] || second[1] != want[1] {
		t.Fatalf("second consumer saw %v, want %v", second, want)
	}
}
