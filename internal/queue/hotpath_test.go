package queue_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// A finished job's ack asks for no confirmation once its result and its
// completion marker are stored: the marker settles a redelivery should the
// ack be lost, so a reply per job would buy nothing. Nor does parking a
// job its host's limits turned away: it sent nothing, and a lost park
// only delays it.
func TestCompletedJobAckAsksNoReply(t *testing.T) {
	b := setupConsumer(t)
	acks := make(chan *nats.Msg, 16)
	if _, err := b.js.Conn().ChanSubscribe("$JS.ACK.>", acks); err != nil {
		t.Fatal(err)
	}
	if err := b.js.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	b.publish(testJob("j1"))
	r := &job.Result{ID: "j1", Batch: "b", OK: true, Status: 200, Attempts: 1}
	b.run([]queue.Decision{{Action: queue.NakAfter, Delay: 10 * time.Millisecond}, {Action: queue.AckWithResult, Result: r}}, nil)
	if err := b.js.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(acks) > 0 {
		m := <-acks
		if data := string(m.Data); data == "+ACK" || strings.HasPrefix(data, "-NAK") {
			got = append(got, fmt.Sprintf("%s reply=%q", strings.Fields(data)[0], m.Reply))
		}
	}
	if want := []string{`-NAK reply=""`, `+ACK reply=""`}; !sameSeq(got, want) {
		t.Errorf("acks sent %q, want %q: a park and an ack without a reply subject", got, want)
	}
	b.mustBeSettled()
}

// Jobs given request places one after another run on the goroutines of
// earlier ones: a new goroutine per job grows a fresh stack through the
// HTTP client every time.
func TestPlacedJobsReuseGoroutines(t *testing.T) {
	b := setupConsumer(t)
	const n = 20
	jobs := make([]*job.Job, n)
	for i := range jobs {
		jobs[i] = testJob(fmt.Sprintf("j%d", i))
	}
	b.publish(jobs...)
	cons, err := queue.NewConsumer(b.ctx, jsFor(t, b.js.Conn().ConnectedUrl()), b.names, queue.ConsumerConfig{
		MaxInflight: 1, AckWait: 5 * time.Second, ShutdownTimeout: 5 * time.Second, PullWait: 100 * time.Millisecond,
		Worker: "w1", Streams: b.stream,
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	guard := time.AfterFunc(60*time.Second, cancel) // liveness guard only
	defer guard.Stop()
	var mu sync.Mutex
	handled, goroutines := 0, map[string]bool{}
	err = cons.Run(ctx, func(_ context.Context, d *queue.Delivery) queue.Decision {
		mu.Lock()
		defer mu.Unlock()
		// Each job starts once the one before it is settled on the
		// server, so its goroutine has had a whole job's time to idle.
		waitUntil(t, func() bool { left, err := b.unsettled(); return err == nil && left <= uint64(n-handled) })
		goroutines[goroutineID()] = true
		if handled++; handled == n {
			cancel()
		}
		return queue.Decision{Action: queue.AckWithResult, Result: &job.Result{ID: d.Job.ID, Batch: "b", OK: true}}
	})
	if err != nil {
		t.Fatal(err)
	}
	if handled != n {
		t.Fatalf("handled %d jobs, want %d", handled, n)
	}
	// One place: a job is given its place while the one before it still
	// settles, so two or three goroutines take turns; never one per job.
	if len(goroutines) > n/2 {
		t.Errorf("%d jobs ran on %d goroutines with one request place, want a few", n, len(goroutines))
	}
}

// goroutineID is the number runtime.Stack names the calling goroutine by.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := bytes.Fields(buf)
	if len(f) < 2 {
		return ""
	}
	return string(f[1])
}

// A job this worker deferred comes back to it with its delivery count one
// higher: nobody else had it meanwhile, so its marker and attempts are not
// looked up again (two requests per return of a parked job).
func TestOwnDeferralIsNotLookedUpAgain(t *testing.T) {
	b := setupConsumer(t)
	gets := make(chan *nats.Msg, 64)
	if _, err := b.js.Conn().ChanSubscribe("$JS.API.DIRECT.GET.>", gets); err != nil {
		t.Fatal(err)
	}
	if err := b.js.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	b.publish(testJob("j1"))
	script := []queue.Decision{
		{Action: queue.NakAfter, Delay: 10 * time.Millisecond},                             // host limit
		{Action: queue.NakAfterAttempt, Delay: 10 * time.Millisecond, Attempts: 1},         // retry
		{Action: queue.NakAfter, Delay: 10 * time.Millisecond, Attempts: 1, TurnedAway: 1}, // breaker
		{Action: queue.AckWithResult, Result: &job.Result{ID: "j1", Batch: "b", OK: true, Attempts: 1}},
	}
	got := b.run(script, nil)
	if want := []seen{{0, 0, 1}, {0, 0, 2}, {1, 0, 3}, {1, 1, 4}}; !sameSeq(got, want) {
		t.Errorf("handler saw %+v, want %+v", got, want)
	}
	if err := b.js.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	// Stored before its lane's consumer existed, the job is looked up at
	// its first delivery (one get of markers, one of attempts); never after.
	if n := len(gets); n != 2 {
		t.Errorf("%d direct gets for a job only this worker had, want the first delivery's 2", n)
	}
	b.mustBeSettled()
}
