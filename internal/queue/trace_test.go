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

// The trace context an enqueue run puts on its job messages reaches the
// handler, and the context a delivery that spent an attempt leaves reaches
// the next delivery, on another consumer (another worker).
func TestTraceContextReachesDeliveries(t *testing.T) {
	leakcheck.AtEnd(t)
	ns := natstest.RunServer(t)
	ctx := context.Background()
	n := queue.NewNames("jetpost")
	streams := queue.StreamConfig{Replicas: 1, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}
	js := jsFor(t, ns.ClientURL())
	if err := queue.Setup(ctx, js, n, streams); err != nil {
		t.Fatal(err)
	}
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var acks []queue.BulkAck
	pub := queue.NewBulkPublisher(ctx, js, 4, func(a queue.BulkAck) { acks = append(acks, a) })
	pub.SetHeaders(map[string]string{"traceparent": parent, "tracestate": "k=v"})
	if err := pub.Publish(ctx, &queue.BulkMsg{ID: "j1", Subject: n.JobSubject("b"), Data: []byte(`{"id":"j1","url":"https://example.com/"}`)}); err != nil {
		t.Fatal(err)
	}
	pub.Close()
	if len(acks) != 1 || acks[0].Err != nil {
		t.Fatalf("publish: %+v", acks)
	}

	type seen struct{ parent, state, subject, prev string }
	run := func(h func(d *queue.Delivery) queue.Decision) seen {
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
		var once sync.Once
		var got seen
		err = cons.Run(rctx, func(_ context.Context, d *queue.Delivery) queue.Decision {
			once.Do(func() {
				got.parent, got.state = d.TraceHeaders()
				got.subject, got.prev = d.Subject(), d.PrevTrace
				cancel()
			})
			return h(d)
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	const first = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
	got := run(func(d *queue.Delivery) queue.Decision {
		d.Trace = first
		return queue.Decision{Action: queue.NakAfterAttempt, Attempts: 1}
	})
	if want := (seen{parent, "k=v", "jetpost.jobs.b", ""}); got != want {
		t.Fatalf("first delivery saw %+v, want %+v", got, want)
	}
	got = run(func(d *queue.Delivery) queue.Decision {
		return queue.Decision{Action: queue.AckWithResult, Result: &job.Result{ID: "j1", Batch: "b", OK: true, Attempts: 2}}
	})
	if got.prev != first || got.parent != parent {
		t.Fatalf("second delivery saw %+v, want the first delivery's context %s", got, first)
	}
}
