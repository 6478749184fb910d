package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
)

// fenceResponder answers fences as a worker does (after reading the
// batch's entry at the revision asked for), and remembers the states it
// was asked to apply.
type fenceResponder struct {
	mu     sync.Mutex
	states []queue.BatchState
}

func respondFences(t *testing.T, nc *nats.Conn, bs *queue.Batches) *fenceResponder {
	t.Helper()
	postOnBoard(t, nc, "w1")
	f := &fenceResponder{}
	sub, err := nc.Subscribe(testNames.BatchFenceSubject(), func(m *nats.Msg) {
		var req struct {
			Batch    string `json:"batch"`
			Revision uint64 `json:"revision"`
		}
		if json.Unmarshal(m.Data, &req) != nil {
			return
		}
		c, rev, err := bs.Get(context.Background(), req.Batch)
		if err != nil || rev < req.Revision {
			return
		}
		f.mu.Lock()
		f.states = append(f.states, c.State)
		f.mu.Unlock()
		b, _ := json.Marshal(map[string]any{"worker": "w1", "revision": rev, "running": 0})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return f
}

// postOnBoard puts worker on the limits board, as a running worker is:
// fences then wait for its answer rather than for a window.
func postOnBoard(t *testing.T, nc *nats.Conn, worker string) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	board, err := fleetrate.OpenBoard(context.Background(), js, testNames.Prefix, 1)
	if err == nil {
		err = board.Post(context.Background(), worker, nil, time.Now())
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fenceResponder) seen() []queue.BatchState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]queue.BatchState(nil), f.states...)
}

// --priority writes the batch's entry before publishing and a later
// enqueue keeps it; pause, resume and cancel say what they did (in JSON
// too) and every worker is asked to apply each; status shows the batch's
// state and priority; a cancelled batch refuses new jobs (exit 5); an
// unknown batch is exit 4, a bad id exit 2.
func TestControlCommands(t *testing.T) {
	setEnv(t)
	ns := natstest.RunServer(t)
	url := ns.ClientURL()
	nc, js := connectJS(t, ns)
	defer nc.Close()
	file := write(t, "jobs.jsonl", jobLines(3, "https://api.example.com/a", "c"))

	r := runCmd(t, nil, file, "--batch", "ctl", "--priority", "high", "--nats", url)
	if r.code() != 0 || !strings.Contains(r.stderr, "priority high") {
		t.Fatalf("enqueue --priority high: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	bs, err := queue.OpenBatches(context.Background(), js, testNames, testStreams)
	if err != nil {
		t.Fatal(err)
	}
	more := write(t, "more.jsonl", jobLines(2, "https://api.example.com/b", "d"))
	if r := runCmd(t, nil, more, "--batch", "ctl", "--nats", url); r.code() != 0 {
		t.Fatalf("enqueue again: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	if c, _, err := bs.Get(context.Background(), "ctl"); err != nil || c.Weight != queue.WeightHigh || c.State != queue.BatchRunning {
		t.Fatalf("entry %+v, %v; want high and running, kept by an enqueue without --priority", c, err)
	}
	if r := runCmd(t, nil, file, "--priority", "urgent", "--nats", url); r.code() != exitUsage {
		t.Errorf("--priority urgent: exit %d, want %d", r.code(), exitUsage)
	}
	// No worker running: the state is stored all the same, and said so.
	for _, action := range []string{"pause", "resume"} {
		r := runCmd(t, nil, action, "ctl", "--nats", url)
		if r.code() != 0 || !strings.Contains(r.stderr, "warning: no worker answered") || !strings.Contains(r.stdout, "0 workers confirmed") {
			t.Fatalf("%s without workers: exit %d (%v)\n%s%s", action, r.code(), r.err, r.stdout, r.stderr)
		}
	}
	fences := respondFences(t, nc, bs)

	steps := []struct {
		args []string
		want string
	}{
		{[]string{"pause", "ctl"}, "batch ctl paused: 5 open jobs held; 1 workers confirmed"},
		{[]string{"pause", "ctl"}, "batch ctl paused (it was paused already): 5 open jobs held"},
		{[]string{"status", "ctl"}, "paused"},
		{[]string{"resume", "ctl"}, "batch ctl resumed (priority high): 5 open jobs to run; 1 workers confirmed"},
		{[]string{"cancel", "ctl"}, "batch ctl cancelled: nothing more of it is sent; 5 jobs were open, each not running then ends with a cancelled result; 1 workers confirmed"},
	}
	for _, s := range steps {
		r := runCmd(t, nil, append(s.args, "--nats", url)...)
		if r.code() != 0 || !strings.Contains(r.stdout, s.want) {
			t.Fatalf("%v: exit %d (%v), stdout %q; want %q\n%s", s.args, r.code(), r.err, r.stdout, s.want, r.stderr)
		}
	}
	if got := fences.seen(); len(got) != 4 || got[0] != queue.BatchPaused || got[2] != queue.BatchRunning || got[3] != queue.BatchCancelled {
		t.Errorf("the workers were asked to apply %v; want paused, paused, running, cancelled", got)
	}
	r = runCmd(t, nil, "status", "--json", "--nats", url)
	var o queue.Overview
	if err := json.Unmarshal([]byte(r.stdout), &o); err != nil || len(o.Batches) != 1 {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	if b := o.Batches[0]; b.State != "cancelled" || b.Priority != "high" || b.Open != 5 || !b.Active {
		t.Errorf("status --json: %+v; want cancelled, high, 5 open", b)
	}

	r = runCmd(t, nil, more, "--batch", "ctl", "--nats", url)
	if r.code() != exitCancelled || !strings.Contains(r.errText(), "batch ctl is cancelled: nothing was published") {
		t.Errorf("enqueue into a cancelled batch: exit %d (%v); want %d", r.code(), r.err, exitCancelled)
	}
	r = runCmd(t, nil, "status", "--nats", url)
	if header := "BATCH  STATE      PRIORITY  SHARE  OPEN  IN FLIGHT  RESULTS/S  RESULTS  CANCELLED  DEAD LETTERS"; !strings.Contains(r.stdout, header) ||
		!strings.Contains(r.stdout, "ctl    cancelled  high      -      5") {
		t.Errorf("status table:\n%s", r.stdout)
	}
	// A batch known by its entry alone (its jobs all completed by earlier
	// runs, say) is no unknown batch.
	if _, _, err := bs.Update(context.Background(), "entryonly", func(*queue.BatchControl) {}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"status", "entryonly"}, {"pause", "entryonly"}} {
		if r := runCmd(t, nil, append(args, "--nats", url)...); r.code() != 0 {
			t.Errorf("%v: exit %d (%v)\n%s", args, r.code(), r.err, r.stderr)
		}
	}
	for _, args := range [][]string{{"pause", "nope"}, {"resume", "nope"}, {"cancel", "nope"}} {
		if r := runCmd(t, nil, append(args, "--nats", url)...); r.code() != exitUnknownBatch {
			t.Errorf("%v: exit %d (%v), want %d", args, r.code(), r.err, exitUnknownBatch)
		}
	}
	for _, args := range [][]string{{"pause", "a b"}, {"cancel"}, {"resume", "x", "y"}} {
		if r := runCmd(t, nil, append(args, "--nats", url)...); r.code() != exitUsage {
			t.Errorf("%v: exit %d (%v), want %d", args, r.code(), r.err, exitUsage)
		}
	}
}

// cancel --wait returns once the batch has no open job, and counts the
// cancelled results stored meanwhile; --json carries the report.
func TestCancelWaitJSON(t *testing.T) {
	setEnv(t)
	ns := natstest.RunServer(t)
	url := ns.ClientURL()
	nc, js := connectJS(t, ns)
	defer nc.Close()
	file := write(t, "jobs.jsonl", jobLines(2, "https://api.example.com/a", "w"))
	if r := runCmd(t, nil, file, "--batch", "cw", "--nats", url); r.code() != 0 {
		t.Fatalf("enqueue: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	bs, err := queue.OpenBatches(context.Background(), js, testNames, testStreams)
	if err != nil {
		t.Fatal(err)
	}
	// The worker: asked to apply the cancel, it still runs a request at
	// the first fence; then it ends both jobs with cancelled results.
	fences := 0
	sub, err := nc.Subscribe(testNames.BatchFenceSubject(), func(m *nats.Msg) {
		ctx := context.Background()
		c, rev, err := bs.Get(ctx, "cw")
		if err != nil || c.State != queue.BatchCancelled {
			return
		}
		if fences++; fences == 1 {
			b, _ := json.Marshal(map[string]any{"worker": "w1", "revision": rev, "running": 1})
			_ = m.Respond(b)
			return
		}
		for _, id := range []string{"w-0000", "w-0001"} {
			_, _ = js.Publish(ctx, testNames.ResultSubject("cw"), []byte(`{"id":"`+id+`","batch":"cw","ok":false,"reason":"cancelled","attempts":0}`),
				jetstream.WithMsgID("cw/"+id))
		}
		if st, err := js.Stream(ctx, testNames.JobsStream()); err == nil {
			_ = st.Purge(ctx, jetstream.WithPurgeSubject(testNames.JobSubject("cw")))
		}
		b, _ := json.Marshal(map[string]any{"worker": "w1", "revision": rev, "running": 0})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	postOnBoard(t, nc, "w1")
	r := runCmd(t, nil, "cancel", "cw", "--wait", "--json", "--timeout", "1m", "--nats", url)
	var out struct {
		queue.ControlReport
		Cancelled *int `json:"cancelled"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); r.code() != 0 || err != nil {
		t.Fatalf("cancel --wait --json: exit %d (%v), %v: %q\n%s", r.code(), r.err, err, r.stdout, r.stderr)
	}
	if out.State != queue.BatchCancelled || out.Open != 0 || out.Cancelled == nil || *out.Cancelled != 2 || out.Fence.Confirmed() != 1 || out.Fences != 2 {
		t.Errorf("cancel --wait --json: %s", r.stdout)
	}
	if want := "batch cw: waiting for 1 requests in flight to finish (w1: 1)\n"; strings.Count(r.stderr, want) != 1 {
		t.Errorf("cancel said on stderr:\n%s\nwant once: %s", r.stderr, want)
	}
}
