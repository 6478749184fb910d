package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/pkg/job"
)

// failoverRig is a real server with jetpost's streams, a consumer whose ack
// wait no test waits out, and a raw handle on batch b's lane consumer that
// plays the deliveries a lost leader took with it.
type failoverRig struct {
	t    *testing.T
	ctx  context.Context
	js   jetstream.JetStream
	c    *Consumer
	raw  jetstream.Consumer
	lane *lane
	seqs map[string]uint64 // job id → stream sequence
}

func newFailoverRig(t *testing.T, ids ...string) *failoverRig {
	t.Helper()
	return newFailoverRigOn(t, serverJS(t), 1, ids...)
}

// newFailoverRigOn is a failover rig on js, its streams and buckets
// replicated replicas ways.
func newFailoverRigOn(t *testing.T, js jetstream.JetStream, replicas int, ids ...string) *failoverRig {
	t.Helper()
	var err error
	r := &failoverRig{t: t, ctx: t.Context(), js: js, seqs: map[string]uint64{}}
	n := NewNames("jetpost")
	sc := StreamConfig{Replicas: replicas, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}
	if err := Setup(r.ctx, js, n, sc); err != nil {
		t.Fatal(err)
	}
	r.c, err = NewConsumer(r.ctx, js, n, ConsumerConfig{MaxInflight: 4, AckWait: 10 * time.Minute, Streams: sc}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	// Batch b's lane, as Run's discovery would make it.
	r.c.startSched(r.ctx)
	r.c.mu.Lock()
	l := r.c.newLaneLocked(n.JobSubject("b"))
	r.c.mu.Unlock()
	cons, created, err := r.c.laneConsumer(r.ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	l.found(cons, created)
	r.lane = l
	if r.raw, err = js.Consumer(r.ctx, n.JobsStream(), n.BatchConsumer(n.JobSubject("b"))); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		j := &job.Job{ID: id, Batch: "b", Method: "GET", URL: "http://127.0.0.1:1/" + id}
		data, err := job.Encode(j)
		if err != nil {
			t.Fatal(err)
		}
		// Published as enqueue publishes (its message id): a job another
		// producer publishes again is ranBefore's case, not these tests'.
		ack, err := js.Publish(r.ctx, n.JobSubject("b"), data, jetstream.WithMsgID(JobMsgID(id, n.Fingerprint(j))))
		if err != nil {
			t.Fatal(err)
		}
		r.seqs[id] = ack.Sequence
	}
	return r
}

// fetch pulls up to n deliveries and returns them by job id with their
// delivery counts.
func (r *failoverRig) fetch(n int, wait time.Duration) map[string]uint64 {
	r.t.Helper()
	batch, err := r.raw.Fetch(n, jetstream.FetchMaxWait(wait))
	if err != nil {
		r.t.Fatal(err)
	}
	got := map[string]uint64{}
	for m := range batch.Messages() {
		j, err := job.Decode(m.Data())
		md, merr := m.Metadata()
		if err != nil || merr != nil {
			r.t.Fatalf("delivery: %v %v", err, merr)
		}
		got[j.ID] = md.NumDelivered
	}
	return got
}

// A consumer leader lost deliveries: three jobs are pending, one held by a
// worker, one deferred by it, one received by nobody. The rescue NAKs the
// orphan alone, which comes back at once, not after the 10-minute ack wait.
func TestRescueNaksOnlyOrphans(t *testing.T) {
	r := newFailoverRig(t, "held", "deferred", "orphan")
	if got := r.fetch(3, 5*time.Second); len(got) != 3 {
		t.Fatalf("first deliveries: %v", got)
	}
	r.c.holds.hold(r.seqs["held"], "batch_b")
	r.c.holds.hold(r.seqs["deferred"], "batch_b")
	r.c.holds.release(r.seqs["deferred"], time.Now().Add(time.Hour), lastDelivery{})
	stop, err := r.c.answerCensus()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	n, err := r.c.rescue(r.ctx)
	if err != nil || n != 1 {
		t.Fatalf("rescue found %d orphans (%v), want 1", n, err)
	}
	// The two others stay pending for ten minutes: a pull that gets the
	// orphan and waits a moment for more cannot see them.
	got := r.fetch(3, 500*time.Millisecond)
	if len(got) != 1 || got["orphan"] != 2 {
		t.Fatalf("after the rescue got %v, want the orphan alone, delivered a second time", got)
	}
}

// A worker on the limits board that missed the census request (it was
// reconnecting) keeps its jobs: the census asks again until it answers,
// and ends as soon as it did, well before its Max.
func TestRescueWaitsForTheWorkersExpected(t *testing.T) {
	r := newFailoverRig(t, "late-holds", "orphan")
	if got := r.fetch(2, 5*time.Second); len(got) != 2 {
		t.Fatalf("first deliveries: %v", got)
	}
	const most = time.Minute
	r.c.cfg.Rescue = RescueConfig{Grace: 10 * time.Millisecond, Census: 50 * time.Millisecond, Max: most,
		Expected: func(context.Context) []string { return []string{"late"} }}
	nc := r.js.Conn()
	// The late worker subscribes only once the first request went out.
	asked := make(chan struct{}, 1)
	spy, err := nc.Subscribe(r.c.names.censusSubject(), func(*nats.Msg) {
		select {
		case asked <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = spy.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		cen  censusResult
		err  error
		took time.Duration
	}
	done := make(chan outcome, 1)
	go func() {
		began := time.Now()
		cen, err := r.c.census(r.ctx)
		done <- outcome{cen, err, time.Since(began)}
	}()
	<-asked
	late, err := nc.Subscribe(r.c.names.censusSubject(), func(m *nats.Msg) {
		b, _ := json.Marshal(censusReply{Worker: "late", Busy: map[string][]uint64{"batch_b": {r.seqs["late-holds"]}}})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = late.Unsubscribe() }()
	o := <-done
	if o.err != nil || o.cen.workers != 1 || !o.cen.busy["batch_b"][r.seqs["late-holds"]] || len(o.cen.missing) != 0 {
		t.Fatalf("census %+v (%v): want the late worker's answer, nobody missing", o.cen, o.err)
	}
	// Ended by the answer, not by Max: a bound no load reaches.
	if o.took >= most/2 {
		t.Fatalf("the census took %v with every expected worker heard", o.took)
	}
	n, err := r.c.rescue(r.ctx)
	if err != nil || n != 1 {
		t.Fatalf("rescue NAKed %d (%v), want the orphan alone", n, err)
	}
	if got := r.fetch(2, 500*time.Millisecond); len(got) != 1 || got["orphan"] != 2 {
		t.Fatalf("after the rescue got %v, want the orphan alone, delivered a second time", got)
	}
}

// A census asked again names the workers it still waits for: only they
// answer; a first request, without a body, asks everyone.
func TestACensusAskedAgainAsksOnlyTheAwaited(t *testing.T) {
	for _, c := range []struct {
		body string
		want bool
	}{{"", true}, {`["w2","w1"]`, true}, {`["w2"]`, false}, {"not json", true}} {
		if got := askedInCensus([]byte(c.body), "w1"); got != c.want {
			t.Errorf("request %q asks w1: %v, want %v", c.body, got, c.want)
		}
	}
}

// An expected worker that never answers (killed, its post on the board
// not stale yet) only delays the census to its Max, and is named missing.
func TestCensusGivesUpOnAWorkerThatNeverAnswers(t *testing.T) {
	r := newFailoverRig(t)
	r.c.cfg.Rescue = RescueConfig{Census: 50 * time.Millisecond, Max: 300 * time.Millisecond,
		Expected: func(context.Context) []string { return []string{"dead"} }}
	stop, err := r.c.answerCensus()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cen, err := r.c.census(r.ctx)
	if err != nil || cen.workers != 1 || !slices.Equal(cen.missing, []string{"dead"}) {
		t.Fatalf("census %+v (%v): want this worker's answer, dead missing", cen, err)
	}
}

// live starts what Run starts for the rescue: the census answers, and
// rescues may run until the test ends.
func (r *failoverRig) live() {
	r.t.Helper()
	r.c.life = r.ctx
	r.t.Cleanup(r.c.background.Wait)
	stop, err := r.c.answerCensus()
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(stop)
}

// fetchReply pulls one delivery, waiting out a consumer without a leader,
// and returns the reply subject its ack would go to.
func (r *failoverRig) fetchReply() string {
	r.t.Helper()
	deadline := time.Now().Add(time.Minute) // a liveness guard
	for time.Now().Before(deadline) {
		batch, err := r.raw.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err == nil {
			for m := range batch.Messages() {
				return m.Reply()
			}
		}
		time.Sleep(100 * time.Millisecond) // polling a condition, bounded above
	}
	r.t.Fatal("no delivery within a minute")
	return ""
}

// lostAck remembers an ack as ackStored does, which nobody sent: the one
// a lost leader took with it.
func (r *failoverRig) lostAck(reply string) {
	r.lane.acks.add(sentAck{reply: reply, at: time.Now(), consumer: r.lane.created})
}

// A lane's ring gives back the acks sent to its consumer of the same
// creation within the age asked, the newest size of them.
func TestRecentAcksAreTheLastToTheSameConsumer(t *testing.T) {
	now := time.Now()
	cons, other := now.Add(-time.Hour), now.Add(-time.Minute)
	r := newRecentAcks(0)
	for i := range minRecentAcks + 2 {
		r.add(sentAck{reply: fmt.Sprint("a", i), at: now, consumer: cons})
	}
	r.add(sentAck{reply: "old", at: now.Add(-2 * recentAck), consumer: cons})
	r.add(sentAck{reply: "another consumer's", at: now, consumer: other})
	got := r.since(cons, now.Add(-recentAck))
	if len(got) != minRecentAcks-2 {
		t.Fatalf("got %d acks, want the %d newest of the consumer's recent ones", len(got), minRecentAcks-2)
	}
	for _, reply := range got {
		if reply == "a0" || reply == "a1" || reply == "a2" || reply == "a3" || reply == "old" || reply == "another consumer's" {
			t.Errorf("got %q", reply)
		}
	}
}

// A job finished and its ack, sent without confirmation (ackStored), went
// with the consumer's leader: here a raw delivery whose ack the worker
// remembers but nobody sent. The new leader's election, announced by
// JetStream, has the worker send it again: the job is acknowledged (and
// not NAKed: nothing comes back), with no pull of this worker failing and
// an ack wait of ten minutes.
func TestANewConsumerLeaderGetsTheLastAcksAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster")
	}
	js := connectJS(t, natstest.NewCluster(t, 3).URL())
	nc := js.Conn()
	r := newFailoverRigOn(t, js, 3, "finished")
	r.lostAck(r.fetchReply())
	r.live()
	// A consumer's first election is its creation's, and lost nothing;
	// the same leader elected again later came back from somewhere.
	leader, created := r.lane.leader, r.lane.created
	if leader == "" {
		t.Fatal("the lane does not know its consumer's leader")
	}
	if r.c.reelected(r.lane.name, leader, created.Add(time.Second)) {
		t.Fatal("a new consumer's first election counted as a leader change")
	}
	if !r.c.reelected(r.lane.name, leader, created.Add(leaderSettle)) {
		t.Fatal("its leader elected again later did not count as a leader change")
	}
	stop, err := r.c.watchLeaders(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := nc.Flush(); err != nil { // the subscription is in place
		t.Fatal(err)
	}
	// A step-down is refused while no follower is current: tried again.
	for deadline := time.Now().Add(time.Minute); ; { // a liveness guard
		resp, err := nc.Request("$JS.API.CONSUMER.LEADER.STEPDOWN.JETPOST_JOBS."+r.lane.name, nil, 10*time.Second)
		if err == nil && strings.Contains(string(resp.Data), `"success":true`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stepping the consumer's leader down: %v %v", err, resp)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition, bounded above
	}
	waitEmpty(t, js) // the ack wait is ten minutes
}

// The worker's connection comes back after its server restarted: the acks
// it sent just before may have been lost, and it sends them again.
func TestAReconnectSendsTheLastAcksAgain(t *testing.T) {
	store := t.TempDir()
	ns := natstest.RunServerAt(t, -1, store)
	port := natstest.Port(ns)
	js := connectJS(t, ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	r := newFailoverRigOn(t, js, 1, "finished")
	r.lostAck(r.fetchReply())
	r.live()
	stop, err := r.c.watchLeaders(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ns.Shutdown()
	ns.WaitForShutdown()
	natstest.RunServerAt(t, port, store)
	waitEmpty(t, js) // the ack wait is ten minutes
}

// A pull found the lane's consumer gone (no responders, or not found on a
// leader still catching up), and creating it found the very same consumer:
// it was out of reach, not gone, and what its old leader lost is rescued.
func TestAConsumerFoundAgainStartsARescue(t *testing.T) {
	r := newFailoverRig(t, "orphan")
	if got := r.fetch(1, 5*time.Second); len(got) != 1 {
		t.Fatalf("first delivery: %v", got)
	}
	r.live()
	r.c.mu.Lock()
	r.lane.cons = nil // as pullDone does
	r.c.createLaneLocked(r.ctx, r.lane)
	r.c.mu.Unlock()
	// A liveness guard, not a timing: the ack wait is ten minutes.
	if got := r.fetch(1, time.Minute); got["orphan"] != 2 {
		t.Fatalf("after the consumer was found again got %v, want the orphan delivered a second time", got)
	}
}

// Another worker rescues (it holds the lock): this one leaves the orphans
// alone rather than NAK a job the other may have redelivered already.
func TestRescueOneWorkerAtATime(t *testing.T) {
	r := newFailoverRig(t, "orphan")
	if got := r.fetch(1, 5*time.Second); len(got) != 1 {
		t.Fatalf("first delivery: %v", got)
	}
	unlock, err := r.c.lockRescue(r.ctx)
	if err != nil || unlock == nil {
		t.Fatalf("lock: %v", err)
	}
	if n, err := r.c.rescue(r.ctx); n != 0 || !errors.Is(err, errRescueBusy) {
		t.Fatalf("rescue under another's lock sent %d NAKs (%v)", n, err)
	}
	unlock()
	stop, err := r.c.answerCensus()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if n, err := r.c.rescue(r.ctx); n != 1 || err != nil {
		t.Fatalf("rescue after the lock was freed found %d (%v)", n, err)
	}
}

// A job finished, its result and completion marker stored, and its ack
// lost with a server: the redelivery is settled by the stored result, and
// the handler (the request) never runs again.
func TestRedeliveredFinishedJobIsNotSentAgain(t *testing.T) {
	r := newFailoverRig(t, "finished", "other-run")
	first := r.fetch(2, 5*time.Second)
	if len(first) != 2 {
		t.Fatalf("first deliveries: %v", first)
	}
	names := NewNames("jetpost")
	for id, seq := range map[string]uint64{"finished": r.seqs["finished"], "other-run": r.seqs["other-run"] + 100} {
		j := &job.Job{ID: id, Batch: "b", Method: "GET", URL: "http://127.0.0.1:1/" + id} // as the rig published it
		fp := names.Fingerprint(j)
		value, _ := json.Marshal(DoneMarker{ID: id, FP: fp, Batch: "b", Seq: 1, OK: true, Attempts: 1, JobSeq: seq})
		if _, err := r.js.Publish(r.ctx, names.doneSubject(names.DoneKey(j)), value); err != nil {
			t.Fatal(err)
		}
	}
	// Both come back (as after their ack wait): one finished, one whose
	// marker is another message's.
	for id := range first {
		subj := "$JS.ACK.JETPOST_JOBS.batch_b.1." + itoa(r.seqs[id]) + ".1.0.0"
		if err := r.js.Conn().Publish(subj, []byte("-NAK")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(r.ctx)
	handled := make(chan string, 2)
	done := make(chan error, 1)
	go func() {
		done <- r.c.Run(ctx, func(_ context.Context, d *Delivery) Decision {
			handled <- d.Job.ID
			return Decision{Action: AckWithResult, Result: &job.Result{ID: d.Job.ID, Batch: "b", OK: true}}
		})
	}()
	select {
	case id := <-handled:
		if id != "other-run" {
			t.Errorf("handler ran for %s", id)
		}
	case <-time.After(2 * time.Minute): // a liveness guard, not a timing
		t.Fatal("the job whose marker is another message's never reached the handler")
	}
	waitEmpty(t, r.js)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-handled:
		t.Errorf("handler ran for %s", id)
	default:
	}
}

// waitEmpty waits until every job is acknowledged (a work queue drops
// acknowledged messages).
func waitEmpty(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // a liveness guard, not a timing
	for {
		s, err := js.Stream(t.Context(), "JETPOST_JOBS")
		if err != nil {
			t.Fatal(err)
		}
		if s.CachedInfo().State.Msgs == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs still not acknowledged", s.CachedInfo().State.Msgs)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded above

	}
}

func itoa(n uint64) string { b, _ := json.Marshal(n); return string(b) }
