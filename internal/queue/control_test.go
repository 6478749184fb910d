package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
)

// controlRig is a server with jetpost's stores, a batch with open jobs and
// a consumer, as a worker would have made it.
type controlRig struct {
	js    jetstream.JetStream
	n     queue.Names
	bs    *queue.Batches
	ctx   context.Context
	jobs  jetstream.Stream
	batch string
}

func newControlRig(t testing.TB, batch string, open int) *controlRig {
	t.Helper()
	ns := natstest.RunServer(t)
	js := jsFor(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // bounds a broken test only
	t.Cleanup(cancel)
	r := &controlRig{js: js, n: queue.NewNames("jetpost"), ctx: ctx, batch: batch}
	cfg := queue.StreamConfig{Replicas: 1, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}
	if err := queue.Setup(ctx, js, r.n, cfg); err != nil {
		t.Fatal(err)
	}
	var err error
	if r.bs, err = queue.OpenBatches(ctx, js, r.n, cfg); err != nil {
		t.Fatal(err)
	}
	if r.jobs, err = js.Stream(ctx, r.n.JobsStream()); err != nil {
		t.Fatal(err)
	}
	for range open {
		if _, err := js.Publish(ctx, r.n.JobSubject(batch), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	r.consumer(t, batch)
	return r
}

// consumer creates batch's consumer as a worker does.
func (r *controlRig) consumer(t testing.TB, batch string) jetstream.Consumer {
	t.Helper()
	c, err := r.jobs.CreateOrUpdateConsumer(r.ctx, jetstream.ConsumerConfig{
		Durable: r.n.BatchConsumer(r.n.JobSubject(batch)), FilterSubject: r.n.JobSubject(batch),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// responder answers fences as a worker does: it reads the batch's entry
// (at least the revision asked for) and replies with how many of the
// batch's jobs it still runs (running, asked on each fence).
func (r *controlRig) responder(t *testing.T, worker string, running func(batch string, state queue.BatchState) int) {
	t.Helper()
	sub, err := r.js.Conn().Subscribe(r.n.BatchFenceSubject(), func(m *nats.Msg) {
		var req struct {
			Batch    string `json:"batch"`
			Revision uint64 `json:"revision"`
		}
		if json.Unmarshal(m.Data, &req) != nil {
			return
		}
		c, rev, err := r.bs.Get(r.ctx, req.Batch)
		if err != nil || rev < req.Revision {
			return // a worker that cannot apply the revision does not answer
		}
		b, _ := json.Marshal(map[string]any{"worker": worker, "revision": rev, "running": running(req.Batch, c.State)})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

func (r *controlRig) control(t *testing.T, expect ...string) *queue.Control {
	t.Helper()
	ctl, err := queue.NewControl(r.ctx, r.js, r.n)
	if err != nil {
		t.Fatal(err)
	}
	// The known workers answer in-process: the bound is a liveness guard.
	ctl.Fence = queue.FenceOptions{Expect: expect, Max: time.Minute}
	return ctl
}

func (r *controlRig) consumerInfo(t *testing.T, batch string) (*jetstream.ConsumerInfo, error) {
	t.Helper()
	c, err := r.jobs.Consumer(r.ctx, r.n.BatchConsumer(r.n.JobSubject(batch)))
	if err != nil {
		return nil, err
	}
	return c.Info(r.ctx)
}

func (r *controlRig) state(t *testing.T, batch string) queue.BatchState {
	t.Helper()
	c, _, err := r.bs.Get(r.ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	return c.State
}

// Pause writes the state, pauses the batch's consumer on the server and
// returns once every known worker confirmed; pausing again is fine;
// resume undoes both.
func TestControlPauseAndResume(t *testing.T) {
	r := newControlRig(t, "b1", 3)
	idle := func(string, queue.BatchState) int { return 0 }
	r.responder(t, "w1", idle)
	r.responder(t, "w2", idle)
	ctl := r.control(t, "w1", "w2")

	for try := range 2 {
		rep, err := ctl.Pause(r.ctx, "b1")
		if err != nil {
			t.Fatal(err)
		}
		if rep.State != queue.BatchPaused || r.state(t, "b1") != queue.BatchPaused {
			t.Fatalf("pause %d: report %+v, entry %s", try, rep, r.state(t, "b1"))
		}
		if rep.Open != 3 || !rep.ConsumerFound || rep.Fence.Confirmed() != 2 || len(rep.Fence.Missing) != 0 {
			t.Errorf("pause %d: open %d, consumer found %v, fence %+v", try, rep.Open, rep.ConsumerFound, rep.Fence)
		}
		if want := map[int]queue.BatchState{0: queue.BatchRunning, 1: queue.BatchPaused}[try]; rep.Previous != want {
			t.Errorf("pause %d: previous state %s, want %s", try, rep.Previous, want)
		}
		if ci, err := r.consumerInfo(t, "b1"); err != nil || !ci.Paused {
			t.Fatalf("pause %d: consumer %+v, %v; want paused", try, ci, err)
		}
	}

	rep, err := ctl.Resume(r.ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if rep.State != queue.BatchRunning || r.state(t, "b1") != queue.BatchRunning || rep.Fence.Confirmed() != 2 || rep.Open != 3 {
		t.Errorf("resume: %+v, entry %s", rep, r.state(t, "b1"))
	}
	if ci, err := r.consumerInfo(t, "b1"); err != nil || ci.Paused {
		t.Fatalf("resume: consumer %+v, %v; want running", ci, err)
	}
	// A batch whose consumer is gone (expired) is paused all the same:
	// workers create it paused.
	if _, err := ctl.Pause(r.ctx, "nocons"); err != nil {
		t.Fatalf("pause without a consumer: %v", err)
	}
}

// Cancel fences until no worker runs one of the batch's jobs, then deletes
// the batch's consumer; it says what it waited for.
func TestControlCancelWaitsForRunningJobsThenDeletesTheConsumer(t *testing.T) {
	r := newControlRig(t, "big", 5)
	var mu sync.Mutex
	fences := 0
	r.responder(t, "w1", func(batch string, state queue.BatchState) int {
		mu.Lock()
		defer mu.Unlock()
		if batch != "big" || state != queue.BatchCancelled {
			t.Errorf("fence of %s in state %s", batch, state)
		}
		fences++
		if fences <= 2 {
			return 1 // a request in flight finishes during the first two fences
		}
		return 0
	})
	r.responder(t, "w2", func(string, queue.BatchState) int { return 0 })
	ctl := r.control(t, "w1", "w2")
	sleeps := 0
	ctl.Sleep = func(context.Context, time.Duration) error { sleeps++; return nil }
	var waited []int
	rep, err := ctl.Cancel(r.ctx, "big", queue.CancelOptions{Timeout: time.Hour, OnWait: func(f queue.FenceResult) {
		waited = append(waited, f.Running)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Fences != 3 || len(waited) != 2 || waited[0] != 1 || sleeps != 2 || rep.TimedOut {
		t.Errorf("fences %d, waited on %v, sleeps %d, timed out %v; want 3 fences, two waits on 1 running", rep.Fences, waited, sleeps, rep.TimedOut)
	}
	if rep.State != queue.BatchCancelled || r.state(t, "big") != queue.BatchCancelled || rep.Open != 5 {
		t.Errorf("report %+v, entry %s", rep, r.state(t, "big"))
	}
	if _, err := r.consumerInfo(t, "big"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("the cancelled batch's consumer: %v; want deleted", err)
	}
}

// A cancel whose running jobs never finish stops at its bound and says so.
func TestControlCancelBounded(t *testing.T) {
	r := newControlRig(t, "stuck", 1)
	r.responder(t, "w1", func(string, queue.BatchState) int { return 2 })
	ctl := r.control(t, "w1")
	bound := make(chan time.Time)
	ctl.Fence.After = func(d time.Duration) <-chan time.Time {
		if d == time.Hour {
			return bound
		}
		return time.After(d)
	}
	waits := 0
	ctl.Sleep = func(context.Context, time.Duration) error { return nil }
	rep, err := ctl.Cancel(r.ctx, "stuck", queue.CancelOptions{Timeout: time.Hour, OnWait: func(queue.FenceResult) {
		if waits++; waits == 3 {
			close(bound)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.TimedOut || rep.Fence.Running != 2 || waits < 3 {
		t.Errorf("report %+v after %d waits; want timed out with 2 running", rep, waits)
	}
}

// A fence counts the known workers that did not answer, and a reply for an
// older revision (a worker that has not applied the change) is no
// confirmation.
func TestFenceMissingAndStaleReplies(t *testing.T) {
	r := newControlRig(t, "f", 0)
	r.responder(t, "w1", func(string, queue.BatchState) int { return 0 })
	stale, err := r.js.Conn().Subscribe(r.n.BatchFenceSubject(), func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"worker":"old","revision":0,"running":0}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stale.Unsubscribe() }()
	_, rev, err := r.bs.Update(r.ctx, "f", func(c *queue.BatchControl) { c.State = queue.BatchPaused })
	if err != nil {
		t.Fatal(err)
	}
	end := make(chan time.Time)
	o := queue.FenceOptions{Expect: []string{"w1", "ghost"}, Max: time.Hour,
		After: func(d time.Duration) <-chan time.Time {
			if d == time.Hour {
				return end
			}
			return time.After(d)
		},
		// w1's reply is in: the bound may end the fence.
		OnReply: func(queue.FenceReply) { close(end) },
	}
	f, err := queue.Fence(r.ctx, r.js.Conn(), r.n, "f", rev, o)
	if err != nil {
		t.Fatal(err)
	}
	if f.Confirmed() != 1 || f.Replies[0].Worker != "w1" || len(f.Missing) != 1 || f.Missing[0] != "ghost" {
		t.Errorf("fence %+v; want w1 confirmed, ghost missing, the stale reply ignored", f)
	}
}

// Status shows each active batch's state, priority, share of the running
// batches with jobs open, jobs in flight on its consumer, rate (from two
// reads of the results stream, the clock driven here) and, for a cancelled
// batch, its cancelled results.
func TestStatusShowsBatchControl(t *testing.T) {
	r := newControlRig(t, "a", 2)
	pub := func(subject, data string) {
		t.Helper()
		if _, err := r.js.Publish(r.ctx, subject, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	set := func(batch string, weight int, state queue.BatchState) {
		t.Helper()
		if _, _, err := r.bs.Update(r.ctx, batch, func(c *queue.BatchControl) { c.Weight, c.State = weight, state }); err != nil {
			t.Fatal(err)
		}
	}
	set("a", queue.WeightHigh, queue.BatchRunning)
	pub(r.n.JobSubject("b"), `{}`) // no entry: normal, running
	set("c", queue.WeightLow, queue.BatchPaused)
	pub(r.n.JobSubject("c"), `{}`)
	set("d", queue.WeightNormal, queue.BatchCancelled)
	pub(r.n.ResultSubject("d"), `{"id":"1","batch":"d","ok":true,"attempts":1}`)
	pub(r.n.ResultSubject("d"), `{"id":"2","batch":"d","ok":false,"reason":"cancelled","attempts":0}`)
	pub(r.n.ResultSubject("d"), `{"id":"3","batch":"d","ok":false,"reason":"cancelled","attempts":0}`)
	msgs, err := r.consumer(t, "a").Fetch(1) // one job of a in flight
	if err != nil {
		t.Fatal(err)
	}
	for range msgs.Messages() {
	}

	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	now := t0
	o, err := queue.Status(r.ctx, r.js, r.n, "", queue.StatusOptions{
		RateWindow: time.Second, Now: func() time.Time { return now },
		Sleep: func(context.Context, time.Duration) error {
			for i := range 3 {
				pub(r.n.ResultSubject("a"), `{"id":"r`+string(rune('0'+i))+`","batch":"a","ok":true}`)
			}
			now = t0.Add(2 * time.Second)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]queue.BatchStatus{}
	for _, b := range o.Batches {
		got[b.Batch] = b
	}
	a, b, c, d := got["a"], got["b"], got["c"], got["d"]
	if a.State != "running" || a.Priority != "high" || a.Share != 0.8 || a.Open != 2 || a.InFlight != 1 || a.Rate != 1.5 {
		t.Errorf("a: %+v; want running, high, share 0.8, 2 open, 1 in flight, 1.5 results/s", a)
	}
	if b.State != "running" || b.Priority != "normal" || b.Share != 0.2 || !b.Active {
		t.Errorf("b: %+v; want running, normal, share 0.2", b)
	}
	if c.State != "paused" || c.Share != 0 || c.Open != 1 {
		t.Errorf("c: %+v; want paused with no share", c)
	}
	if d.State != "cancelled" || d.Cancelled == nil || *d.Cancelled != 2 || d.Results != 3 {
		t.Errorf("d: %+v; want cancelled with 2 cancelled results of 3", d)
	}
	if o.RateWindowMS != 2000 || o.Unacked != 1 {
		t.Errorf("rate window %dms, unacked %d; want 2000 and 1", o.RateWindowMS, o.Unacked)
	}
}

// BenchmarkStatusThousandBatches: enqueue status with 1,000 active batches,
// each with an entry, a job open and its consumer (rates not measured: that
// adds the one-second window).
func BenchmarkStatusThousandBatches(b *testing.B) {
	r := newControlRig(b, "b0000", 1)
	for i := 1; i < 1000; i++ {
		batch := fmt.Sprintf("b%04d", i)
		if _, _, err := r.bs.Update(r.ctx, batch, func(*queue.BatchControl) {}); err != nil {
			b.Fatal(err)
		}
		if _, err := r.js.Publish(r.ctx, r.n.JobSubject(batch), []byte(`{}`)); err != nil {
			b.Fatal(err)
		}
		if _, err := r.jobs.CreateOrUpdateConsumer(r.ctx, jetstream.ConsumerConfig{
			Durable: r.n.BatchConsumer(r.n.JobSubject(batch)), FilterSubject: r.n.JobSubject(batch), AckPolicy: jetstream.AckExplicitPolicy,
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		o, err := queue.Status(r.ctx, r.js, r.n, "")
		if err != nil || len(o.Batches) != 1000 {
			b.Fatalf("%d batches, %v", len(o.Batches), err)
		}
	}
}
