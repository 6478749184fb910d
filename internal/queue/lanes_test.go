package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/pkg/job"
)

// laneRig is a real server with jetpost's streams and the batches bucket.
type laneRig struct {
	t       *testing.T
	ctx     context.Context
	js      jetstream.JetStream
	n       Names
	sc      StreamConfig
	batches *Batches
}

func newLaneRig(t *testing.T) *laneRig {
	t.Helper()
	js := serverJS(t)
	var err error
	r := &laneRig{t: t, ctx: t.Context(), js: js, n: NewNames("jetpost"),
		sc: StreamConfig{Replicas: 1, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}}
	if err := Setup(r.ctx, js, r.n, r.sc); err != nil {
		t.Fatal(err)
	}
	if r.batches, err = OpenBatches(r.ctx, js, r.n, r.sc); err != nil {
		t.Fatal(err)
	}
	return r
}

func laneJob(batch string, i int) *job.Job {
	return &job.Job{ID: fmt.Sprintf("%s-%04d", batch, i), Batch: batch, Method: "GET", URL: "http://127.0.0.1:1/x"}
}

// publish publishes n jobs of batch as enqueue does.
func (r *laneRig) publish(batch string, n int) {
	r.t.Helper()
	pub := NewPublisher(r.js, r.n, 256, nil)
	for i := range n {
		if err := pub.Publish(r.ctx, laneJob(batch, i)); err != nil {
			r.t.Fatal(err)
		}
	}
	if st := pub.Close(); st.Published != n {
		r.t.Fatalf("published %+v", st)
	}
}

func (r *laneRig) consumer(inflight, prefetch int) *Consumer {
	r.t.Helper()
	c, err := NewConsumer(r.ctx, r.js, r.n, ConsumerConfig{
		MaxInflight: inflight, Prefetch: prefetch, AckWait: time.Minute, ShutdownTimeout: 5 * time.Second,
		PullWait: 100 * time.Millisecond, Worker: "w1", Streams: r.sc,
	}, zerolog.Nop())
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// run runs c with h until every channel in after is closed and the jobs
// stream is empty, then stops it.
func (r *laneRig) run(c *Consumer, h Handler, after ...<-chan struct{}) {
	r.t.Helper()
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, h) }()
	for _, ch := range after {
		<-ch
	}
	waitEmpty(r.t, r.js)
	cancel()
	if err := <-done; err != nil {
		r.t.Fatal(err)
	}
}

func okResult(d *Delivery) Decision {
	return Decision{Action: AckWithResult, Result: &job.Result{ID: d.Job.ID, Batch: d.Job.Batch, OK: true, Attempts: 1}}
}

// results reads batch's stored results.
func (r *laneRig) results(batch string) []job.Result {
	r.t.Helper()
	var rs []job.Result
	if _, err := ReadResults(r.ctx, r.js, r.n, batch, func(_ uint64, data []byte) error {
		var res job.Result
		err := json.Unmarshal(data, &res)
		rs = append(rs, res)
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
	return rs
}

// waitFetched waits until c holds every job of each batch, offered to the
// places (looked up if they had to be).
func (r *laneRig) waitFetched(c *Consumer, want map[string]int) {
	deadline := time.Now().Add(time.Minute) // a liveness guard, not a timing
	for {
		all := true
		c.mu.Lock()
		for batch, n := range want {
			if l := c.lanes[r.n.JobSubject(batch)]; l == nil || l.out != n {
				all = false
			}
		}
		c.mu.Unlock()
		if all {
			return
		}
		if time.Now().After(deadline) {
			r.t.Error("the worker never held every job")
			return
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
}

// Two batches, both backlogged, one request place: the places go to them
// in proportion to their weights, within one at every point.
func TestLanesShareByWeight(t *testing.T) {
	for _, tc := range []struct {
		name   string
		wa, wb int
		na, nb int
	}{
		{"equal", WeightNormal, WeightNormal, 20, 20},
		{"four to one", WeightHigh, WeightNormal, 40, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newLaneRig(t)
			for batch, w := range map[string]int{"a": tc.wa, "b": tc.wb} {
				if _, _, err := r.batches.Update(r.ctx, batch, func(b *BatchControl) { b.Weight, b.State = w, BatchRunning }); err != nil {
					t.Fatal(err)
				}
			}
			r.publish("a", tc.na)
			r.publish("b", tc.nb)
			// The window holds both batches whole: from the second
			// dispatch on, both lanes always have jobs ready.
			c := r.consumer(1, 2*(tc.na+tc.nb))
			var order []string
			r.run(c, func(_ context.Context, d *Delivery) Decision {
				if len(order) == 0 {
					r.waitFetched(c, map[string]int{"a": tc.na, "b": tc.nb})
				}
				order = append(order, d.Job.Batch)
				return okResult(d)
			})
			if len(order) != tc.na+tc.nb {
				t.Fatalf("%d dispatches, want %d", len(order), tc.na+tc.nb)
			}
			// The first dispatch came before both lanes were ready.
			share := float64(tc.wa) / float64(tc.wa+tc.wb)
			a := 0
			for k, batch := range order[1:] {
				if batch == "a" {
					a++
				}
				if ideal := float64(k+1) * share; math.Abs(float64(a)-ideal) > 1 {
					t.Fatalf("after %d dispatches a had %d, ideal %.1f: order %v", k+1, a, ideal, order)
				}
			}
		})
	}
}

// A lone batch gets every place: MaxInflight handlers run at once.
func TestLoneLaneUsesEveryPlace(t *testing.T) {
	r := newLaneRig(t)
	r.publish("solo", 12)
	c := r.consumer(4, 4)
	var mu sync.Mutex
	running, calls, closed := 0, 0, false
	all := make(chan struct{})
	r.run(c, func(_ context.Context, d *Delivery) Decision {
		mu.Lock()
		running++
		calls++
		if running == 4 && !closed { // later calls may run four at once too
			close(all)
			closed = true
		}
		first := calls <= 4
		mu.Unlock()
		if first {
			select { // the first four wait for each other
			case <-all:
			case <-time.After(time.Minute): // a liveness guard
				t.Error("four places never ran at once")
			}
		}
		mu.Lock()
		running--
		mu.Unlock()
		return okResult(d)
	})
	if calls != 12 {
		t.Errorf("%d calls, want 12", calls)
	}
}

// fence asks every worker to apply batch's state of rev and returns the
// replies that came within a second.
func (r *laneRig) fence(batch string, rev uint64) []batchFenceReply {
	r.t.Helper()
	nc := r.js.Conn()
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		r.t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	body, _ := json.Marshal(batchFence{Batch: batch, Revision: rev})
	if err := nc.PublishRequest(r.n.batchControlSubject(), inbox, body); err != nil {
		r.t.Fatal(err)
	}
	select {
	case m := <-ch:
		var rep batchFenceReply
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			r.t.Fatal(err)
		}
		return []batchFenceReply{rep}
	case <-time.After(30 * time.Second): // a liveness guard
		r.t.Fatal("no worker answered the fence")
	}
	return nil
}

func (r *laneRig) setState(batch string, s BatchState) uint64 {
	r.t.Helper()
	_, rev, err := r.batches.Update(r.ctx, batch, func(b *BatchControl) { b.State = s })
	if err != nil {
		r.t.Fatal(err)
	}
	return rev
}

// Pause: no job of the batch starts after the fence's reply, the fetched
// ones are handed back unspent; resume: the rest run, each once.
func TestLanePauseAndResume(t *testing.T) {
	r := newLaneRig(t)
	r.publish("p", 10)
	c := r.consumer(1, 10)
	var mu sync.Mutex
	paused := false
	calls := map[string]int{}
	consumer := r.n.BatchConsumer(r.n.JobSubject("p"))
	r.run(c, func(_ context.Context, d *Delivery) Decision {
		mu.Lock()
		calls[d.Job.ID]++
		if paused {
			t.Errorf("%s started while its batch was paused", d.Job.ID)
		}
		first := len(calls) == 1
		mu.Unlock()
		if !first {
			return okResult(d)
		}
		r.waitFetched(c, map[string]int{"p": 10})
		rev := r.setState("p", BatchPaused)
		if _, err := r.js.PauseConsumer(r.ctx, r.n.JobsStream(), consumer, farFuture); err != nil {
			t.Error(err)
		}
		if reps := r.fence("p", rev); reps[0].Running != 1 || reps[0].Revision < rev {
			t.Errorf("fence reply %+v, want this job running at revision %d", reps[0], rev)
		}
		mu.Lock()
		paused = true
		mu.Unlock()
		if d.BatchState() != BatchPaused {
			t.Errorf("the delivery sees its batch %s", d.BatchState())
		}
		// The nine others are handed back (the fence waits for that only
		// within a bound): the worker comes to hold this one alone.
		r.waitFetched(c, map[string]int{"p": 1})
		c.mu.Lock()
		if l := c.lanes[r.n.JobSubject("p")]; len(l.ready) != 0 {
			t.Errorf("after the pause %d jobs are ready; want none", len(l.ready))
		}
		c.mu.Unlock()
		go func() {
			mu.Lock()
			paused = false
			mu.Unlock()
			rev := r.setState("p", BatchRunning)
			if _, err := r.js.ResumeConsumer(r.ctx, r.n.JobsStream(), consumer); err != nil {
				t.Error(err)
			}
			r.fence("p", rev)
		}()
		return okResult(d)
	})
	if len(calls) != 10 {
		t.Errorf("%d jobs handled, want 10", len(calls))
	}
	for id, n := range calls {
		if n != 1 {
			t.Errorf("%s handled %d times", id, n)
		}
	}
}

// Cancel: the job running finishes; every other ends with exactly one
// cancelled result, without a handler or a dead letter, also after the
// batch's consumer is deleted (as enqueue cancel does).
func TestLaneCancelDrains(t *testing.T) {
	r := newLaneRig(t)
	r.publish("x", 20)
	c := r.consumer(1, 5)
	calls := 0
	consumer := r.n.BatchConsumer(r.n.JobSubject("x"))
	// The consumer stays running until the deletion below is done: the
	// drain can empty the stream first, and a stopped consumer answers no
	// fence.
	deleted := make(chan struct{})
	r.run(c, func(_ context.Context, d *Delivery) Decision {
		calls++
		if calls > 1 {
			t.Errorf("%s started after the cancel", d.Job.ID)
			return okResult(d)
		}
		rev := r.setState("x", BatchCancelled)
		if _, err := r.js.PauseConsumer(r.ctx, r.n.JobsStream(), consumer, farFuture); err != nil {
			t.Error(err)
		}
		if reps := r.fence("x", rev); reps[0].Running != 1 {
			t.Errorf("fence reply %+v, want this job running", reps[0])
		}
		go func() {
			defer close(deleted)
			// enqueue deletes the consumer once nothing runs: deferred
			// jobs come back at once, through a consumer made again.
			for r.fence("x", rev)[0].Running != 0 {
				time.Sleep(10 * time.Millisecond) // polling a condition
			}
			if err := r.js.DeleteConsumer(r.ctx, r.n.JobsStream(), consumer); err != nil && !IsNotFound(err) {
				t.Error(err)
			}
		}()
		return okResult(d)
	}, deleted)
	rs := r.results("x")
	ok, cancelled := 0, map[string]int{}
	for _, res := range rs {
		switch {
		case res.OK:
			ok++
		case res.Reason == job.ReasonCancelled && res.Attempts == 0:
			cancelled[res.ID]++
		default:
			t.Errorf("unexpected result %+v", res)
		}
	}
	if ok != 1 || len(cancelled) != 19 || len(rs) != 20 {
		t.Errorf("%d ok, %d cancelled of %d results, want 1, 19 of 20", ok, len(cancelled), len(rs))
	}
	var dls int
	if err := DeadLetters(r.ctx, r.js, r.n, "x", func(StoredDeadLetter) error { dls++; return nil }); err != nil || dls != 0 {
		t.Errorf("%d dead letters (%v), want none", dls, err)
	}
}

// A thousand batches of one job each: every job is handled exactly once.
func TestThousandLanes(t *testing.T) {
	r := newLaneRig(t)
	const n = 1000
	pub := NewPublisher(r.js, r.n, 256, nil)
	for i := range n {
		if err := pub.Publish(r.ctx, laneJob(fmt.Sprintf("b%04d", i), 0)); err != nil {
			t.Fatal(err)
		}
	}
	if st := pub.Close(); st.Published != n {
		t.Fatalf("published %+v", st)
	}
	c := r.consumer(8, 8)
	var mu sync.Mutex
	calls := map[string]int{}
	r.run(c, func(_ context.Context, d *Delivery) Decision {
		mu.Lock()
		calls[d.Job.ID]++
		mu.Unlock()
		return okResult(d)
	})
	if len(calls) != n {
		t.Errorf("%d jobs handled, want %d", len(calls), n)
	}
	for id, k := range calls {
		if k != 1 {
			t.Errorf("%s handled %d times", id, k)
		}
	}
}

// A message published straight on a subject no batch has still gets its
// invalid result, through a lane of its own.
func TestOddSubjectIsInvalid(t *testing.T) {
	r := newLaneRig(t)
	if _, err := r.js.Publish(r.ctx, "jetpost.jobs.a.b", []byte(`{"id":"odd","method":"GET","url":"http://127.0.0.1:1/"}`)); err != nil {
		t.Fatal(err)
	}
	c := r.consumer(1, 1)
	r.run(c, func(_ context.Context, d *Delivery) Decision {
		t.Errorf("handler ran for %+v", d.Job)
		return okResult(d)
	})
	if rs := r.results("invalid"); len(rs) != 1 || rs[0].Reason != job.ReasonInvalid {
		t.Errorf("results %+v, want one invalid", rs)
	}
}

// fetchRaw pulls every job of n from cons and returns their sequences by
// job id, leaving them unacknowledged.
func (r *laneRig) fetchRaw(cons jetstream.Consumer, n int) map[string]uint64 {
	r.t.Helper()
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		r.t.Fatal(err)
	}
	seqs := map[string]uint64{}
	for m := range batch.Messages() {
		j, err := job.Decode(m.Data())
		md, merr := m.Metadata()
		if err != nil || merr != nil {
			r.t.Fatalf("delivery: %v %v", err, merr)
		}
		seqs[j.ID] = md.Sequence.Stream
	}
	if len(seqs) != n {
		r.t.Fatalf("fetched %d of %d", len(seqs), n)
	}
	return seqs
}

// finished stores the completion marker an earlier delivery of the job
// message seq left when its result was stored and its ack lost.
func (r *laneRig) finished(j *job.Job, seq uint64) {
	r.t.Helper()
	fp := r.n.Fingerprint(j)
	value, _ := json.Marshal(DoneMarker{ID: j.ID, FP: fp, Batch: j.Batch, Seq: 1, OK: true, Attempts: 1, JobSeq: seq})
	if _, err := r.js.Publish(r.ctx, r.n.doneSubject(r.n.DoneKey(j)), value); err != nil {
		r.t.Fatal(err)
	}
}

// handledOnce runs a consumer until the stream is empty and returns how
// often each job reached the handler.
func (r *laneRig) handledOnce(c *Consumer) map[string]int {
	var mu sync.Mutex
	calls := map[string]int{}
	r.run(c, func(_ context.Context, d *Delivery) Decision {
		mu.Lock()
		calls[d.Job.ID]++
		mu.Unlock()
		return okResult(d)
	})
	return calls
}

// Workers of the version before lanes shared one consumer. The new worker
// deletes it at start; its unacknowledged deliveries, two of them finished
// (result stored, ack lost), come back through the batch's lane at once,
// not after the old ack wait, and the finished ones are not sent again.
func TestSharedConsumerMigration(t *testing.T) {
	r := newLaneRig(t)
	old, err := r.js.CreateConsumer(r.ctx, r.n.JobsStream(), jetstream.ConsumerConfig{
		Durable: r.n.Consumer(), FilterSubject: r.n.JobSubject(anyBatch), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Hour, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.publish("m", 4)
	seqs := r.fetchRaw(old, 4)
	r.finished(laneJob("m", 0), seqs["m-0000"])
	r.finished(laneJob("m", 1), seqs["m-0001"])

	calls := r.handledOnce(r.consumer(2, 2))
	if len(calls) != 2 || calls["m-0002"] != 1 || calls["m-0003"] != 1 {
		t.Errorf("handled %v, want m-0002 and m-0003 once each", calls)
	}
	if _, err := r.js.Consumer(r.ctx, r.n.JobsStream(), r.n.Consumer()); !IsNotFound(err) {
		t.Errorf("the shared consumer is still there (%v)", err)
	}
}

// A batch's consumer is deleted (a cancel, or its inactivity) while a
// finished job's ack was lost; the consumer made again delivers that job
// for the first time, but it was stored before the consumer was created:
// its marker is looked up and it is not sent again.
func TestRecreatedLaneDoesNotResendFinished(t *testing.T) {
	r := newLaneRig(t)
	name := r.n.BatchConsumer(r.n.JobSubject("r"))
	first, err := r.js.CreateConsumer(r.ctx, r.n.JobsStream(), jetstream.ConsumerConfig{
		Durable: name, FilterSubject: r.n.JobSubject("r"), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Hour, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.publish("r", 3)
	seqs := r.fetchRaw(first, 3)
	r.finished(laneJob("r", 0), seqs["r-0000"])
	if err := r.js.DeleteConsumer(r.ctx, r.n.JobsStream(), name); err != nil {
		t.Fatal(err)
	}
	calls := r.handledOnce(r.consumer(1, 1))
	if len(calls) != 2 || calls["r-0000"] != 0 {
		t.Errorf("handled %v, want r-0001 and r-0002 alone", calls)
	}
}

// A finished batch's entry is deleted once it is older than the linger;
// a paused batch's stays.
func TestFinishedBatchIsForgotten(t *testing.T) {
	r := newLaneRig(t)
	r.setState("done", BatchRunning)
	r.setState("held", BatchPaused)
	r.publish("live", 1)
	c := r.consumer(1, 1)
	c.cfg.Now = func() time.Time { return time.Now().Add(lingerDone + time.Minute) }
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, func(_ context.Context, d *Delivery) Decision { return okResult(d) }) }()
	deadline := time.Now().Add(time.Minute) // a liveness guard, not a timing
	for {
		if _, rev, err := r.batches.Get(r.ctx, "done"); err == nil && rev == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the finished batch's entry was never forgotten")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, rev, err := r.batches.Get(r.ctx, "held"); err != nil || rev == 0 {
		t.Errorf("the paused batch's entry is gone (%v)", err)
	}
}
