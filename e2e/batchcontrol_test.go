package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
)

// Batch control with real worker processes (issue 15): pause, resume and
// cancel hold across the fleet, with one worker killed -9 mid-batch.

// arrivals is a target that records when each request arrived.
type arrivals struct {
	tg *target.Target
	mu sync.Mutex
	at []time.Time
}

// heldArrivals is an arrivals target that holds every request after the
// first holdFrom until release is called (or the test ends). Tests that
// act on a batch mid-way hold its tail, so that the batch is still open
// when they act, however slow the machine is to get there.
func heldArrivals(t *testing.T, latency time.Duration, holdFrom int) (*arrivals, string, func()) {
	t.Helper()
	a, g := &arrivals{}, &gate{}
	g.shut()
	a.tg = target.New(target.Options{Latency: latency, OnRequest: func(r *http.Request) {
		a.mu.Lock()
		a.at = append(a.at, time.Now())
		held := len(a.at) > holdFrom
		a.mu.Unlock()
		if held {
			g.pass(r)
		}
	}})
	srv := httptest.NewServer(a.tg)
	t.Cleanup(srv.Close)
	t.Cleanup(g.open) // runs first: the server's Close waits for held requests
	return a, srv.URL, g.open
}

// after counts the requests that arrived after t.
func (a *arrivals) after(t time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, at := range a.at {
		if at.After(t) {
			n++
		}
	}
	return n
}

func (a *arrivals) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.at)
}

// controlCmd runs enqueue pause/resume/cancel and fails the test unless it
// exits 0; it returns when it returned and its stdout.
func controlCmd(t *testing.T, url string, args ...string) (time.Time, string) {
	t.Helper()
	began := time.Now()
	code, stdout, stderr := runEnqueue(t, nil, append(args, "--nats", url)...)
	if code != 0 {
		t.Fatalf("enqueue %v: exit %d\n%s%s", args, code, stdout, stderr)
	}
	t.Logf("enqueue %v took %.2fs: %s", args, time.Since(began).Seconds(), strings.TrimSpace(stdout))
	return time.Now(), stdout
}

// startControlled starts two workers and an enqueue --wait --json of n jobs
// of batch, then kill -9s the oldest worker once the target has seen
// killAt requests (a replacement starts).
func startControlled(t *testing.T, deadline time.Time, url, tURL string, a *arrivals, o *observer, n, killAt int, batch string) (*pool, *proc, string) {
	t.Helper()
	// A request held at the target must not time out and be tried again.
	p := &pool{t: t, env: chaosWorkerEnv(url, "JETPOST_REQUEST_TIMEOUT=5m")}
	enq, out, _ := p.startBatch(2, deadline, n, tURL, batch, nil, "--nats", url)
	o.until(deadline, batch, fmt.Sprintf("%d requests at the target", killAt), func() bool { return a.count() >= killAt })
	killed := p.killOldest()
	p.live[len(p.live)-1].waitLineUntil("consuming jobs", deadline)
	t.Logf("killed %s mid-batch after %d requests", killed, a.count())
	return p, enq, out
}

// releaseWhen calls release once batch's state reads state, or when ctx
// ends. It runs on its own goroutine, so it reports nothing: a test that
// waits for what release lets go fails on its own deadline.
func releaseWhen(ctx context.Context, o *observer, batch string, state queue.BatchState, release func()) {
	defer release()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if bc, _, err := queue.BatchEntry(ctx, o.js, queue.NewNames("jetpost"), batch); err == nil && bc.State == state {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// settled waits until the target has no request in flight: the requests
// running when a command returned have finished.
func settled(t *testing.T, deadline time.Time, o *observer, a *arrivals, batch string) {
	t.Helper()
	o.until(deadline, batch, "the requests in flight to finish", func() bool { return a.tg.Stats().InFlight == 0 })
}

// pauseReport is what the test reads of pause --json.
type pauseReport struct {
	State string `json:"state"`
	Fence struct {
		Replies []struct {
			Worker string `json:"worker"`
		} `json:"replies"`
		Running int `json:"running"`
	} `json:"fence"`
}

// confirmedBy: every one of workers answered the fence.
func (r pauseReport) confirmedBy(workers []string) bool {
	seen := map[string]bool{}
	for _, w := range r.Fence.Replies {
		seen[w.Worker] = true
	}
	for _, w := range workers {
		if !seen[w] {
			return false
		}
	}
	return r.State == "paused"
}

// Pause stops every send of the batch across the fleet once it returns and
// the requests in flight finish, even with a worker killed -9 (its jobs come
// back after the ack wait and must stay held); resume completes the batch
// with exactly one ok result per job.
func TestPauseHoldsAndResumeCompletes(t *testing.T) {
	if testing.Short() {
		t.Skip("worker processes, kill -9 and an ack wait")
	}
	deadline := time.Now().Add(chaosBudget)
	const n, batch = 600, "pz"
	ns := natstest.RunServer(t)
	url := ns.ClientURL()
	o := newObserver(t, url)
	a, tURL, release := heldArrivals(t, 30*time.Millisecond, n-200)
	p, enq, out := startControlled(t, deadline, url, tURL, a, o, n, 60, batch)

	// Paused once every live worker confirmed: a worker slow to answer
	// (a loaded machine) is asked again, as pausing a paused batch is fine.
	var paused time.Time
	var rep pauseReport
	for try := 1; !rep.confirmedBy(p.ids); try++ {
		if try > 5 {
			t.Fatalf("pause: the live workers %v never all confirmed: %+v", p.ids, rep)
		}
		var stdout string
		paused, stdout = controlCmd(t, url, "pause", batch, "--json")
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil || rep.State != "paused" {
			t.Fatalf("pause --json: %v: %s", err, stdout)
		}
	}
	// Requests the workers had started when they confirmed may reach the
	// target after pause returned: at most what they reported running.
	// Nothing else of the batch arrives while it is paused, including the
	// killed worker's jobs, which come back once the ack wait (2s) passes:
	// watching past it is an observation window, not a synchronisation (a
	// correct fleet sends nothing in it, however slow the machine).
	for end := time.Now().Add(3 * 2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if got := a.after(paused); got > rep.Fence.Running {
			t.Fatalf("%d requests arrived after pause returned; the workers reported %d running", got, rep.Fence.Running)
		}
	}
	// The held requests arrived before the pause; they finish now.
	release()
	settled(t, deadline, o, a, batch)
	held := a.count()
	stored := o.stored(batch)
	if stored >= n {
		t.Fatalf("the whole batch finished before the pause (%d results): nothing was tested", stored)
	}
	t.Logf("paused with %d of %d results stored; %d requests sent, %d arrived after pause returned (in flight then)",
		stored, n, held, a.after(paused))

	controlCmd(t, url, "resume", batch)
	if code := exitCode(t, enq, deadline, func() string { return o.state(batch) }); code != 0 {
		t.Fatalf("enqueue --wait exit %d after resume\n%s", code, enq.output())
	}
	checkBatch(t, o, a.tg, batch, out, n, deadline)
	if a.count() <= held {
		t.Errorf("no request after resume")
	}
}

// Cancel ends every open job with exactly one cancelled result, counted in
// enqueue --wait's summary and in status, and nothing of the batch is sent
// once it returns, with a worker killed -9 mid-batch.
func TestCancelEndsEveryOpenJobOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("worker processes and kill -9")
	}
	deadline := time.Now().Add(chaosBudget)
	const n, batch = 2000, "cx"
	ns := natstest.RunServer(t)
	url := ns.ClientURL()
	o := newObserver(t, url)
	a, tURL, release := heldArrivals(t, 30*time.Millisecond, n-500)
	_, enq, out := startControlled(t, deadline, url, tURL, a, o, n, 100, batch)

	// cancel --wait waits for the requests in flight, the held ones too:
	// they are let go once the batch reads cancelled.
	go releaseWhen(t.Context(), o, batch, queue.BatchCancelled, release)
	cancelled, stdout := controlCmd(t, url, "cancel", batch, "--wait")
	if !strings.Contains(stdout, "batch cx cancelled:") || !strings.Contains(stdout, "no job open") {
		t.Errorf("cancel said %q", stdout)
	}
	sentBefore := a.count()
	if code := exitCode(t, enq, deadline, func() string { return o.state(batch) }); code != 1 {
		t.Errorf("enqueue --wait of a cancelled batch: exit %d, want 1\n%s", code, enq.output())
	}
	if got := a.after(cancelled); got != 0 {
		t.Errorf("%d requests arrived after cancel returned", got)
	}
	if a.count() != sentBefore {
		t.Errorf("%d requests arrived after cancel --wait returned", a.count()-sentBefore)
	}
	res := readResults(t, out)
	if len(res) != n {
		t.Errorf("%d results in --out, want %d", len(res), n)
	}
	counts := map[string]int{}
	for _, r := range res {
		switch {
		case r.OK:
			counts["ok"]++
		case r.Reason == job.ReasonCancelled:
			counts["cancelled"]++
			if r.Attempts != 0 {
				t.Errorf("%s: cancelled after %d attempts", r.ID, r.Attempts)
			}
		default:
			counts[string(r.Reason)]++
		}
	}
	if counts["cancelled"] == 0 || counts["ok"] == 0 {
		t.Fatalf("results %v: want some ok (before the cancel) and some cancelled", counts)
	}
	if got := o.countUntil(deadline, batch, "JETPOST_RESULTS", "jetpost.results."+batch); got != n {
		t.Errorf("results stream holds %d results of %s, want exactly %d (one per job)", got, batch, n)
	}
	if open := o.countUntil(deadline, batch, "JETPOST_JOBS", "jetpost.jobs."+batch); open != 0 {
		t.Errorf("%d jobs still open", open)
	}
	summary := fmt.Sprintf("batch %s: %d results: %d ok, %d failed", batch, n, counts["ok"], n-counts["ok"]-counts["cancelled"])
	if line := lastLine(enq.output()); !strings.Contains(line, summary) || !strings.Contains(line, fmt.Sprintf(", %d cancelled", counts["cancelled"])) {
		t.Errorf("summary %q; the results say %v", line, counts)
	}
	code, st, stderr := runEnqueue(t, nil, "status", batch, "--json", "--nats", url)
	var ov struct {
		Batches []struct {
			State     string `json:"state"`
			Cancelled *int   `json:"cancelled"`
		} `json:"batches"`
	}
	if err := json.Unmarshal([]byte(st), &ov); code != 0 || err != nil || len(ov.Batches) != 1 {
		t.Fatalf("status: exit %d, %v\n%s%s", code, err, st, stderr)
	}
	if b := ov.Batches[0]; b.State != "cancelled" || b.Cancelled == nil || *b.Cancelled != counts["cancelled"] {
		t.Errorf("status of the cancelled batch: %s; want %d cancelled", st, counts["cancelled"])
	}
	t.Logf("%d jobs: %v; target saw %d requests, %d distinct jobs", n, counts, a.count(), a.tg.Stats().DistinctKeys)
}
