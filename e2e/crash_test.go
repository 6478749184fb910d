package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
)

// Crash and broker-restart tests: the batch must end with exactly one stored
// result per job however the processes around it die. They run a few
// thousand jobs, so they stay out of -short runs.

const (
	chaosInflight = 16
	chaosPrefetch = 4
	// chaosBudget bounds each test's waits: a liveness guard, not a
	// speed limit, so it leaves room for a run on two cores shared with
	// other builds and tests (a quiet machine needs about 20 s).
	chaosBudget = 5 * time.Minute
)

// chaosWorkerEnv: a small ack wait so a killed worker's jobs come back
// within seconds, and fast retries.
func chaosWorkerEnv(natsURL string, extra ...string) []string {
	return workerEnv(natsURL, append([]string{
		"JETPOST_MAX_INFLIGHT=" + strconv.Itoa(chaosInflight),
		"JETPOST_PREFETCH=" + strconv.Itoa(chaosPrefetch),
		"JETPOST_ACK_WAIT=2s",
	}, extra...)...)
}

// chaosTarget answers in 5-20 ms.
func chaosTarget(t *testing.T) (*target.Target, string) {
	tg := target.New(target.Options{Latency: 5 * time.Millisecond, Jitter: 15 * time.Millisecond, Seed: 1})
	srv := httptest.NewServer(tg)
	t.Cleanup(srv.Close)
	return tg, srv.URL
}

// observer is the test's own view of the broker (url may list several
// servers); it rides through restarts like the workers do.
type observer struct {
	t  *testing.T
	nc *nats.Conn
	js jetstream.JetStream
	// lane is the batch consumer whose leader the cluster tests watch.
	lane string
}

func newObserver(t *testing.T, url string) *observer {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("e2e-observer"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &observer{t: t, nc: nc, js: js}
}

// subjectCount is how many messages stream holds on subject.
func (o *observer) subjectCount(stream, subject string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := o.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	return info.State.Subjects[subject], nil
}

// countUntil is subjectCount asked again until the broker answers (a
// loaded or recovering broker may miss a request's 2 s); it fails the test
// at the deadline.
func (o *observer) countUntil(deadline time.Time, batch, stream, subject string) uint64 {
	o.t.Helper()
	var n uint64
	o.until(deadline, batch, "the number of messages on "+subject, func() bool {
		var err error
		n, err = o.subjectCount(stream, subject)
		return err == nil
	})
	return n
}

// stored is the number of results stored for batch; 0 while the broker
// does not answer.
func (o *observer) stored(batch string) uint64 {
	n, _ := o.subjectCount("JETPOST_RESULTS", "jetpost.results."+batch)
	return n
}

// state describes the jobs stream and the batch's consumer, for failure
// messages.
func (o *observer) state(batch string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "results stored for %s: %d", batch, o.stored(batch))
	if s, err := o.js.Stream(ctx, "JETPOST_JOBS"); err != nil {
		fmt.Fprintf(&b, "; jobs stream: %v", err)
	} else {
		fmt.Fprintf(&b, "; jobs stream: %d messages", s.CachedInfo().State.Msgs)
		if c, err := s.Consumer(ctx, "batch_"+batch); err != nil {
			fmt.Fprintf(&b, "; consumer: %v", err)
		} else {
			ci := c.CachedInfo()
			fmt.Fprintf(&b, "; consumer: pending %d, ack pending %d, redelivered %d, waiting pulls %d",
				ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting)
		}
	}
	return b.String()
}

// until polls cond until it holds; it fails the test (with the broker's
// state) once the deadline passes. Polling a condition is the wait; the
// interval only sets how soon we notice.
func (o *observer) until(deadline time.Time, batch, what string, cond func() bool) {
	o.t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			o.t.Fatalf("gave up waiting for %s; %s", what, o.state(batch))
		}
		<-tick.C
	}
}

// exitCode waits for p to exit before the deadline and returns its status.
func exitCode(t *testing.T, p *proc, deadline time.Time, why func() string) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Until(deadline)):
		t.Fatalf("%s did not exit in time; %s", filepath.Base(p.cmd.Path), why())
	}
	return p.wait()
}

// waitLineUntil is waitLine bounded by the test's own deadline.
func (p *proc) waitLineUntil(s string, deadline time.Time) {
	p.t.Helper()
	timeout := time.After(time.Until(deadline))
	for !strings.Contains(p.output(), s) {
		select {
		case <-p.seen:
		case <-p.done:
			if !strings.Contains(p.output(), s) {
				p.t.Fatalf("%s exited (%v) before printing %q", filepath.Base(p.cmd.Path), p.err, s)
			}
		case <-timeout:
			p.t.Fatalf("%s printed no line containing %q in time", filepath.Base(p.cmd.Path), s)
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatalf("kill -9: %v", err)
	}
	<-p.done
}

// checkBatch asserts the batch's outcome: exactly one ok result per job in
// the --out file and exactly n results stored on the batch's subject, no
// dead letters, no job left in the work queue, and every job answered 2xx
// by the target.
func checkBatch(t *testing.T, o *observer, tg *target.Target, batch, out string, n int, deadline time.Time) {
	t.Helper()
	res := readResults(t, out)
	if len(res) != n {
		t.Errorf("%d results in %s, want %d", len(res), out, n)
	}
	retried, workers := 0, map[string]int{}
	for i := range n {
		id := fmt.Sprintf("job-%05d", i)
		r, ok := res[id]
		switch {
		case !ok:
			t.Errorf("no result for %s", id)
		case !r.OK || r.Batch != batch:
			t.Errorf("%s: ok=%v batch=%s status=%d reason=%s error=%s", id, r.OK, r.Batch, r.Status, r.Reason, r.Error)
		default:
			workers[r.Worker]++
			if r.Attempts > 1 {
				retried++
			}
		}
	}
	if got := o.countUntil(deadline, batch, "JETPOST_RESULTS", "jetpost.results."+batch); got != uint64(n) {
		t.Errorf("results stream holds %d messages on jetpost.results.%s, want exactly %d", got, batch, n)
	}
	if dl := o.countUntil(deadline, batch, "JETPOST_DLQ", "jetpost.dlq."+batch); dl != 0 {
		t.Errorf("%d dead letters for a batch that all went ok", dl)
	}
	// The last acks may reach the broker just after enqueue saw the last
	// result.
	o.until(deadline, batch, "an empty work queue", func() bool {
		n, err := o.subjectCount("JETPOST_JOBS", "jetpost.jobs."+batch)
		return err == nil && n == 0
	})
	for i := range n {
		id := fmt.Sprintf("job-%05d", i)
		if k := tg.Key(id); k.Successes == 0 {
			t.Errorf("target never answered %s with 2xx: %+v", id, k)
		}
	}
	t.Logf("results by worker: %v; %d results with attempts > 1", workers, retried)
}

// pool keeps a set of worker processes and replaces the ones it kills.
type pool struct {
	t     *testing.T
	env   []string
	live  []*proc
	all   []*proc // including the killed ones
	ids   []string
	seq   int
	kills int
}

func (p *pool) spawn() *proc {
	p.seq++
	id := fmt.Sprintf("w%d", p.seq)
	w := start(p.t, "worker", append(append([]string{}, p.env...), "JETPOST_WORKER_ID="+id))
	p.live = append(p.live, w)
	p.all = append(p.all, w)
	p.ids = append(p.ids, id)
	return w
}

// killOldest kill -9s the longest-running worker (the one most likely to hold
// jobs) and starts a replacement.
// startBatch starts workers workers, the first alone (on a fresh cluster,
// concurrent creations of the same stream leave all but one unanswered
// until their timeout), waits until each consumes, then runs enqueue
// --wait for n jobs aimed at tURL. enqEnv and enqArgs say how
// enqueue reaches NATS. It returns the enqueue process, its --out file and
// when it started.
func (p *pool) startBatch(workers int, deadline time.Time, n int, tURL, batch string, enqEnv []string, enqArgs ...string) (*proc, string, time.Time) {
	p.t.Helper()
	p.spawn().waitLineUntil("consuming jobs", deadline)
	for range workers - 1 {
		p.spawn()
	}
	for _, w := range p.live {
		w.waitLineUntil("consuming jobs", deadline)
	}
	file := writeJobs(p.t, n, tURL)
	out := filepath.Join(p.t.TempDir(), "results.jsonl")
	began := time.Now()
	// Not --quiet: tests wait for its "N published" line.
	args := append(enqArgs, "--batch", batch, "--wait", "--out", out, file)
	return start(p.t, "enqueue", enqEnv, args...), out, began
}

func (p *pool) killOldest() string {
	w, id := p.live[0], p.ids[0]
	p.live, p.ids = p.live[1:], p.ids[1:]
	w.kill()
	p.kills++
	p.spawn()
	return id
}

// Issue 3: kill -9 workers again and again while a batch runs. Jobs a killed
// worker held come back after the ack wait and are finished by the others.
// The batch still ends with exactly one result per job, and the only
// requests the target sees twice are those a killed worker had sent and not
// yet acknowledged: at most its jobs in hand per kill, 2 × MAX_INFLIGHT +
// PREFETCH (MAX_INFLIGHT of them in flight, as many waiting for the host's
// capacity, whose requests were not sent, or answered and being settled).
func TestWorkerKillNineLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 jobs and repeated kill -9")
	}
	deadline := time.Now().Add(chaosBudget)
	const n, batch = 5000, "crash"
	ns := natstest.RunServer(t)
	url := ns.ClientURL()
	o := newObserver(t, url)
	tg, tURL := chaosTarget(t)

	p := &pool{t: t, env: chaosWorkerEnv(url)}
	enq, out, began := p.startBatch(3, deadline, n, tURL, batch, nil, "--nats", url)

	// Chaos paced by progress, not by the clock: kill -9 the oldest worker
	// each time another killEvery results are stored, from 5% until 93% of
	// the batch, so every run kills the same number of workers (12) however
	// fast the machine is. A replacement starts at once and the next kill
	// waits until it consumes, so three workers hold jobs at every kill.
	const killEvery = 400
	var killed []string
	for next := uint64(n / 20); next <= n*93/100; next += killEvery {
		o.until(deadline, batch, fmt.Sprintf("%d results", next), func() bool { return o.stored(batch) >= next })
		killed = append(killed, p.killOldest())
		p.live[len(p.live)-1].waitLineUntil("consuming jobs", deadline)
	}
	if code := exitCode(t, enq, deadline, func() string { return o.state(batch) }); code != 0 {
		t.Fatalf("enqueue exit %d\n%s\n%s", code, enq.output(), o.state(batch))
	}
	elapsed := time.Since(began)
	checkBatch(t, o, tg, batch, out, n, deadline)

	st := tg.Stats()
	bound := int64(p.kills * (2*chaosInflight + chaosPrefetch))
	if st.Duplicates > bound {
		t.Errorf("target saw %d duplicate sends after %d kills; bound is kills × (2 × MAX_INFLIGHT + PREFETCH) = %d", st.Duplicates, p.kills, bound)
	}
	if st.DistinctKeys != n {
		t.Errorf("target saw %d distinct jobs, want %d", st.DistinctKeys, n)
	}
	t.Logf("%d jobs, 3 workers × MAX_INFLIGHT %d + PREFETCH %d, ACK_WAIT 2s: %d kill -9 (%s) in %.1fs; "+
		"target saw %d requests (%d cut off by a kill), %d duplicates (bound %d), at most %d sends of one job, max %d in flight; %s",
		n, chaosInflight, chaosPrefetch, p.kills, strings.Join(killed, ","), elapsed.Seconds(),
		st.Requests, st.Canceled, st.Duplicates, bound, maxSends(tg), st.MaxInFlight, lastLine(enq.output()))
	t.Logf("worker warnings: %v; enqueue warnings: %v", warnings(p.all...), warnings(enq))
}

// Issue 3: the NATS server stops and starts again on the same port and store
// while a batch runs. Workers and enqueue --wait reconnect by themselves; the
// batch ends with exactly one result per job.
func TestNatsRestartMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("3,000 jobs and a broker restart")
	}
	deadline := time.Now().Add(chaosBudget)
	const n, batch = 3000, "restart"
	store := t.TempDir()
	ns := natstest.RunServerAt(t, -1, store)
	port := natstest.Port(ns)
	url := ns.ClientURL()
	o := newObserver(t, url)
	tg, tURL := chaosTarget(t)

	p := &pool{t: t, env: chaosWorkerEnv(url)}
	enq, out, began := p.startBatch(2, deadline, n, tURL, batch, nil, "--nats", url)
	enq.waitLineUntil(fmt.Sprintf("%d published", n), deadline)

	o.until(deadline, batch, "a third of the results", func() bool { return o.stored(batch) >= n/3 })
	before := o.stored(batch)
	ns.Shutdown()
	ns.WaitForShutdown()
	inFlightAtStop := tg.Stats().InFlight
	natstest.RunServerAt(t, port, store)
	for _, w := range p.live {
		w.waitLineUntil("reconnected to NATS", deadline)
	}

	if code := exitCode(t, enq, deadline, func() string { return o.state(batch) }); code != 0 {
		t.Fatalf("enqueue exit %d\n%s\n%s", code, enq.output(), o.state(batch))
	}
	elapsed := time.Since(began)
	checkBatch(t, o, tg, batch, out, n, deadline)

	// Duplicates are counted, not bounded: at-least-once allows them, and
	// their number depends on how many acks the stopping server dropped.
	st := tg.Stats()
	inHand := len(p.live) * (chaosInflight + chaosPrefetch)
	t.Logf("%d jobs, 2 workers: broker restarted after %d results (%d requests in flight at the target); %.1fs; "+
		"target saw %d requests, %d duplicates (jobs workers can hold: %d), at most %d sends of one job; %s",
		n, before, inFlightAtStop, elapsed.Seconds(), st.Requests, st.Duplicates, inHand, maxSends(tg), lastLine(enq.output()))
	t.Logf("worker warnings: %v; enqueue warnings: %v", warnings(p.all...), warnings(enq))
}

// warnings counts a process's warn- and error-level log messages by text,
// so a run's log shows what the chaos made the workers say.
func warnings(ps ...*proc) map[string]int {
	m := map[string]int{}
	for _, p := range ps {
		for _, l := range strings.Split(p.output(), "\n") {
			var e struct{ Level, Message string }
			if json.Unmarshal([]byte(l), &e) == nil && (e.Level == "warn" || e.Level == "error") {
				m[e.Level+": "+e.Message]++
			}
		}
	}
	return m
}

// maxSends is the most requests the target saw for one job.
func maxSends(tg *target.Target) int {
	m := 0
	for _, k := range tg.Keys() {
		m = max(m, k.Requests)
	}
	return m
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
