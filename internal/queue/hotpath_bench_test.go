package queue_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// What the queue's side of a job costs, with no HTTP: fetch, settle (result,
// marker, ack) and, for one job in four, a park (a host limit's NakAfter)
// and its return, as at 0 ms against one host. The broker runs in this
// process: cpu-µs/job is worker and broker together (rusage), msgs/job
// the messages the server received and sent per job.
//
//	go test -run '^$' -bench HotPath -benchtime 20000x ./internal/queue
func BenchmarkHotPath(b *testing.B) {
	ns := natstest.RunServer(b)
	ctx := context.Background()
	names := queue.NewNames("jetpost")
	streams := queue.StreamConfig{Replicas: 1, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}
	js := jsFor(b, ns.ClientURL(), jetstream.WithPublishAsyncMaxPending(4096))
	if err := queue.Setup(ctx, js, names, streams); err != nil {
		b.Fatal(err)
	}
	pub := queue.NewPublisher(js, names, 4096, nil)
	for i := range b.N {
		if err := pub.Publish(ctx, &job.Job{ID: fmt.Sprintf("j%d", i), Batch: "b", Method: "GET", URL: "https://example.com/x"}); err != nil {
			b.Fatal(err)
		}
	}
	if st := pub.Close(); st.Published != b.N {
		b.Fatalf("published %+v", st)
	}
	cons, err := queue.NewConsumer(ctx, jsFor(b, ns.ClientURL()), names, queue.ConsumerConfig{
		MaxInflight: 256, Prefetch: 64, AckWait: 30 * time.Second, ShutdownTimeout: 5 * time.Second,
		PullWait: 200 * time.Millisecond, Worker: "w1", Streams: streams,
	}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	done := 0
	v0, _ := ns.Varz(nil)
	cpu0 := cpuTime()
	b.ResetTimer()
	err = cons.Run(runCtx, func(_ context.Context, d *queue.Delivery) queue.Decision {
		if d.Seq%4 == 0 && d.NumDelivered == 1 {
			return queue.Decision{Action: queue.NakAfter, Delay: time.Millisecond}
		}
		mu.Lock()
		if done++; done == b.N {
			cancel()
		}
		mu.Unlock()
		return queue.Decision{Action: queue.AckWithResult, Result: &job.Result{ID: d.Job.ID, Batch: "b", OK: true, Status: 200, Attempts: 1}}
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	cpu := cpuTime() - cpu0
	v1, _ := ns.Varz(nil)
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/job")
	b.ReportMetric(float64(v1.InMsgs-v0.InMsgs+v1.OutMsgs-v0.OutMsgs)/float64(b.N), "msgs/job")
}

// cpuTime is the CPU this process used so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
