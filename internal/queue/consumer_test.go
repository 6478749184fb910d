package queue_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// consumerBundle is a real server with jetpost's streams, a publisher of
// jobs, and a record of what settling sent, in the order the server got it.
type consumerBundle struct {
	t      *testing.T
	ctx    context.Context
	js     jetstream.JetStream
	names  queue.Names
	stream queue.StreamConfig
	wire   chan *nats.Msg
}

func setupConsumer(t *testing.T) *consumerBundle {
	t.Helper()
	leakcheck.AtEnd(t)
	ns := natstest.RunServer(t)
	b := &consumerBundle{t: t, ctx: t.Context(), names: queue.NewNames("jetpost"), wire: make(chan *nats.Msg, 1024),
		stream: queue.StreamConfig{Replicas: 1, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}}
	b.js = jsFor(t, ns.ClientURL())
	if err := queue.Setup(b.ctx, b.js, b.names, b.stream); err != nil {
		t.Fatal(err)
	}
	// One connection, one channel: what the consumer's connection sends
	// arrives here in the order it was sent.
	nc := b.js.Conn()
	for _, subj := range []string{"jetpost.results.>", "jetpost.dlq.>", "$JS.ACK.>", "$KV." + b.names.AttemptsBucket() + ".>"} {
		if _, err := nc.ChanSubscribe(subj, b.wire); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *consumerBundle) publish(jobs ...*job.Job) {
	b.t.Helper()
	pub := queue.NewPublisher(b.js, b.names, len(jobs), nil)
	for _, j := range jobs {
		if err := pub.Publish(b.ctx, j); err != nil {
			b.t.Fatal(err)
		}
	}
	if st := pub.Close(); st.Published != len(jobs) {
		b.t.Fatalf("published %+v", st)
	}
}

// seen is what a handler was given.
type seen struct {
	attempts, turned int
	delivered        uint64
}

// run consumes until the handler's script for the job is played out (each
// call answers the next decision), or until done reports true when the
// handler must not be called at all. It returns what the handler saw.
func (b *consumerBundle) run(script []queue.Decision, done func() bool) []seen {
	b.t.Helper()
	cons, err := queue.NewConsumer(b.ctx, jsFor(b.t, b.js.Conn().ConnectedUrl()), b.names, queue.ConsumerConfig{
		MaxInflight: 1, AckWait: 5 * time.Second, ShutdownTimeout: 5 * time.Second, PullWait: 100 * time.Millisecond,
		Worker: "w1", Streams: b.stream,
	}, zerolog.Nop())
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	var mu sync.Mutex
	var got []seen
	// A liveness guard for a broken test, not a timing assertion.
	guard := time.AfterFunc(60*time.Second, func() {
		b.t.Error("the script was not played out within 60s")
		cancel()
	})
	defer guard.Stop()
	if done != nil {
		go func() {
			waitUntil(b.t, done)
			cancel()
		}()
	}
	err = cons.Run(ctx, func(_ context.Context, d *queue.Delivery) queue.Decision {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, seen{d.Attempts, d.TurnedAway, d.NumDelivered})
		if len(got) > len(script) {
			b.t.Errorf("delivery %d beyond the script", len(got))
			cancel()
			return queue.Decision{Action: queue.HandBack}
		}
		if len(got) == len(script) {
			cancel() // Run settles this decision before it returns
		}
		return script[len(got)-1]
	})
	if err != nil {
		b.t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return got
}

// settled names what the consumer sent, in order: "result", "dead letter",
// "attempts", and acknowledgements by their body ("+ACK", "-NAK" with or
// without a delay, "+TERM"); progress signals are left out.
func (b *consumerBundle) settled() []string {
	b.t.Helper()
	// A request on the same connection orders everything sent before it.
	if err := b.js.Conn().Flush(); err != nil {
		b.t.Fatal(err)
	}
	var out []string
	for {
		select {
		case m := <-b.wire:
			switch s := m.Subject; {
			case strings.HasPrefix(s, "jetpost.results."):
				out = append(out, "result")
			case strings.HasPrefix(s, "jetpost.dlq."):
				out = append(out, "dead letter")
			case strings.HasPrefix(s, "$KV."):
				out = append(out, "attempts "+string(m.Data))
			case string(m.Data) == "+WPI":
			case strings.HasPrefix(string(m.Data), "-NAK {"):
				out = append(out, "-NAK delay")
			default:
				out = append(out, string(m.Data))
			}
		default:
			return out
		}
	}
}

func (b *consumerBundle) results(batch string) []job.Result {
	b.t.Helper()
	var rs []job.Result
	if _, err := queue.ReadResults(b.ctx, b.js, b.names, batch, func(_ uint64, data []byte) error {
		var r job.Result
		err := json.Unmarshal(data, &r)
		rs = append(rs, r)
		return err
	}); err != nil {
		b.t.Fatal(err)
	}
	return rs
}

func (b *consumerBundle) deadLetters(batch string) []queue.StoredDeadLetter {
	b.t.Helper()
	var dls []queue.StoredDeadLetter
	if err := queue.DeadLetters(b.ctx, b.js, b.names, batch, func(dl queue.StoredDeadLetter) error {
		dls = append(dls, dl)
		return nil
	}); err != nil {
		b.t.Fatal(err)
	}
	return dls
}

// unsettled reports the job messages not yet acknowledged or terminated,
// delivered or not (a work queue drops settled messages).
func (b *consumerBundle) unsettled() (uint64, error) {
	s, err := b.js.Stream(b.ctx, b.names.JobsStream())
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.Msgs, nil
}

// mustBeSettled fails the test unless every message is settled. Acks are
// not confirmed (the server removes an acked job from its ack queue a
// moment after reading the ack), so it waits for that moment.
func (b *consumerBundle) mustBeSettled() {
	b.t.Helper()
	waitUntil(b.t, func() bool { n, err := b.unsettled(); return err == nil && n == 0 })
	if n, err := b.unsettled(); err != nil || n != 0 {
		b.t.Errorf("%d messages unsettled (%v), want none", n, err)
	}
}

// waitUntil polls cond; the deadline only bounds a broken test.
func waitUntil(t *testing.T, cond func() bool) {
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Error("condition not met within 60s")
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sameSeq[T comparable](got, want []T) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func testJob(id string) *job.Job {
	return &job.Job{ID: id, Batch: "b", Method: "GET", URL: "https://example.com/" + id}
}

// Each action settles a delivery in one way, against a real server.
func TestConsumerSettles(t *testing.T) {
	t.Run("AckWithResultStoresTheResultBeforeTheAck", func(t *testing.T) {
		b := setupConsumer(t)
		b.publish(testJob("j1"))
		r := &job.Result{ID: "j1", Batch: "b", OK: true, Status: 200, Attempts: 1}
		b.run([]queue.Decision{{Action: queue.AckWithResult, Result: r}}, nil)
		if got, want := b.settled(), []string{"result", "+ACK"}; !sameSeq(got, want) {
			t.Errorf("settling sent %q, want %q", got, want)
		}
		if rs := b.results("b"); len(rs) != 1 || rs[0].ID != "j1" || !rs[0].OK {
			t.Errorf("results %+v", rs)
		}
		if dls := b.deadLetters("b"); len(dls) != 0 {
			t.Errorf("dead letters %+v, want none", dls)
		}
		b.mustBeSettled()
	})
	t.Run("AckWithResultDeadLettersAFailure", func(t *testing.T) {
		b := setupConsumer(t)
		b.publish(testJob("j1"))
		r := &job.Result{ID: "j1", Batch: "b", Status: 404, Attempts: 1, Reason: job.ReasonPermanent, Error: "status 404"}
		b.run([]queue.Decision{{Action: queue.AckWithResult, Result: r}}, nil)
		if got, want := b.settled(), []string{"result", "dead letter", "+ACK"}; !sameSeq(got, want) {
			t.Errorf("settling sent %q, want %q", got, want)
		}
		dls := b.deadLetters("b")
		if len(dls) != 1 || dls[0].Reason != job.ReasonPermanent || dls[0].Result.ID != "j1" || len(dls[0].Job) == 0 {
			t.Errorf("dead letters %+v, want the job's, reason permanent, with the job", dls)
		}
		if rs := b.results("b"); len(rs) != 1 || rs[0].OK {
			t.Errorf("results %+v, want one failed", rs)
		}
		b.mustBeSettled()
	})
	t.Run("AckWithResultOfACallbackMessageStoresOnlyItsFailure", func(t *testing.T) {
		b := setupConsumer(t)
		stored := &job.Result{ID: "j1", Batch: "b", OK: true, Status: 200, Attempts: 1}
		j := testJob("j1")
		j.Callback = "https://hooks.example.com/cb"
		b.publish(j.CallbackMessage(stored))
		again := *stored
		again.Callback = &job.CallbackResult{Status: 410, Attempts: 1, Error: "status 410"}
		b.run([]queue.Decision{{Action: queue.AckWithResult, Result: &again}}, nil)
		if got, want := b.settled(), []string{"dead letter", "+ACK"}; !sameSeq(got, want) {
			t.Errorf("settling sent %q, want %q", got, want)
		}
		if dls := b.deadLetters("b"); len(dls) != 1 || dls[0].Reason != job.ReasonCallbackFailed {
			t.Errorf("dead letters %+v, want the callback's", dls)
		}
	})
	t.Run("NakAfterAttemptRecordsAttempts", func(t *testing.T) {
		b := setupConsumer(t)
		b.publish(testJob("j1"))
		const delay = 200 * time.Millisecond
		script := []queue.Decision{
			{Action: queue.NakAfterAttempt, Attempts: 1, Delay: delay},
			{Action: queue.AckWithResult, Result: &job.Result{ID: "j1", Batch: "b", OK: true, Attempts: 2}},
		}
		got := b.run(script, nil)
		if want := []seen{{0, 0, 1}, {1, 0, 2}}; !sameSeq(got, want) {
			t.Errorf("handler saw %+v, want %+v", got, want)
		}
		if got, want := b.settled(), []string{"attempts 1", "-NAK delay", "result", "+ACK"}; !sameSeq(got, want) {
			t.Errorf("settling sent %q, want %q", got, want)
		}
	})
	t.Run("NakAfterSpendsNothingButATurnAway", func(t *testing.T) {
		b := setupConsumer(t)
		b.publish(testJob("j1"))
		script := []queue.Decision{
			{Action: queue.NakAfter, Delay: 10 * time.Millisecond},                // host limit
			{Action: queue.NakAfter, Delay: 10 * time.Millisecond, TurnedAway: 1}, // breaker
			{Action: queue.AckWithResult, Result: &job.Result{ID: "j1", Batch: "b", OK: true}},
		}
		got := b.run(script, nil)
		if want := []seen{{0, 0, 1}, {0, 0, 2}, {0, 1, 3}}; !sameSeq(got, want) {
			t.Errorf("handler saw %+v, want %+v", got, want)
		}
		want := []string{"-NAK delay", `attempts {"attempts":0,"turned_away":1}`, "-NAK delay", "result", "+ACK"}
		if got := b.settled(); !sameSeq(got, want) {
			t.Errorf("settling sent %q, want %q", got, want)
		}
	})
	t.Run("HandBackReturnsTheJobUnspent", func(t *testing.T) {
		b := setupConsumer(t)
		b.publish(testJob("j1"))
		script := []queue.Decision{
			{Action: queue.HandBack},
			{Action: queue.AckWithResult, Result: &job.Result{ID: "j1", Batch: "b", OK: true, Attempts: 1}},
		}
		if got, want := b.run(script, nil), []seen{{0, 0, 1}, {0, 0, 2}}; !sameSeq(got, want) {
			t.Errorf("handler saw %+v, want %+v", got, want)
		}
		if got, want := b.settled(), []string{"-NAK", "result", "+ACK"}; !sameSeq(got, want) {
			t.Errorf("settling sent %q, want %q", got, want)
		}
	})
	t.Run("InvalidMessageIsDeadLetteredAndTerminated", func(t *testing.T) {
		b := setupConsumer(t)
		if _, err := b.js.Publish(b.ctx, b.names.JobSubject("b"), []byte(`{"id":"bad","method":"GET"}`)); err != nil {
			t.Fatal(err)
		}
		b.run(nil, func() bool { n, err := b.unsettled(); return err == nil && n == 0 })
		if got, want := b.settled(), []string{"result", "dead letter", "+TERM"}; !sameSeq(got, want) {
			t.Errorf("settling sent %q, want %q", got, want)
		}
		rs, dls := b.results("b"), b.deadLetters("b")
		if len(rs) != 1 || rs[0].OK || rs[0].Reason != job.ReasonInvalid || rs[0].Worker != "w1" {
			t.Errorf("results %+v, want one failed, reason invalid", rs)
		}
		if len(dls) != 1 || dls[0].Reason != job.ReasonInvalid {
			t.Errorf("dead letters %+v, want one, reason invalid", dls)
		}
	})
}
