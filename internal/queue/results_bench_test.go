package queue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
)

// What one result per job costs `enqueue results`: ReadLatestResults reads
// the batch twice (ids, then records), ReadResults once.
//
//	go test -run '^$' -bench 'Results100k' -benchtime 5x ./internal/queue
func BenchmarkReadResults100k(b *testing.B) {
	benchResults(b, func(ctx context.Context, js jetstream.JetStream, n queue.Names) (int, error) {
		return queue.ReadResults(ctx, js, n, "big", func(uint64, []byte) error { return nil })
	})
}

func BenchmarkReadLatestResults100k(b *testing.B) {
	benchResults(b, func(ctx context.Context, js jetstream.JetStream, n queue.Names) (int, error) {
		st, err := queue.ReadLatestResults(ctx, js, n, "big", func(uint64, []byte) error { return nil })
		return st.Results, err
	})
}

func benchResults(b *testing.B, read func(context.Context, jetstream.JetStream, queue.Names) (int, error)) {
	const results = 100_000
	ns := natstest.RunServer(b)
	js := jsFor(b, ns.ClientURL(), jetstream.WithPublishAsyncMaxPending(4096))
	ctx := context.Background()
	n := queue.NewNames("jetpost")
	if err := queue.Setup(ctx, js, n, queue.StreamConfig{DedupWindow: time.Minute, ResultsMaxAge: time.Hour}); err != nil {
		b.Fatal(err)
	}
	// About the size of a result with a short response body.
	body := strings.Repeat("x", 120)
	for i := range results {
		rec := fmt.Appendf(nil, `{"id":"order-%07d","batch":"big","ok":true,"status":200,"attempts":1,"error":"","body":%q,"body_truncated":false,"duration_ms":48,"worker":"w1","finished_at":"2026-11-27T10:15:02.113Z"}`, i, body)
		for {
			_, err := js.PublishAsync(n.ResultSubject("big"), rec)
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				b.Fatal(err)
			}
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishing the results took over a minute")
	}
	b.ResetTimer()
	for range b.N {
		got, err := read(ctx, js, n)
		if err != nil || got != results {
			b.Fatalf("read %d results, %v; want %d", got, err, results)
		}
	}
	b.ReportMetric(float64(results)*float64(b.N)/b.Elapsed().Seconds(), "results/s")
}

// What counting a cancelled batch's cancelled results costs `enqueue
// status` (and `cancel --wait`): one ordered read of its results.
//
//	go test -run '^$' -bench 'CancelledResults100k' -benchtime 5x ./internal/queue
func BenchmarkCancelledResults100k(b *testing.B) {
	from := time.Now().Add(-time.Hour)
	benchResults(b, func(ctx context.Context, js jetstream.JetStream, n queue.Names) (int, error) {
		_, err := queue.CancelledResults(ctx, js, n, "big", from)
		return 100_000, err
	})
}
