package enqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// echoTarget answers every request with its method, path and body, and
// counts them: which request a result came from is in the result.
type echoTarget struct {
	mu   sync.Mutex
	seen map[string]int // "METHOD /path" → requests
}

func newEchoTarget(t *testing.T) (*echoTarget, string) {
	e := &echoTarget{seen: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		what := r.Method + " " + r.URL.Path
		e.mu.Lock()
		e.seen[what]++
		e.mu.Unlock()
		fmt.Fprintf(w, "%s %s", what, body)
	}))
	t.Cleanup(srv.Close)
	return e, srv.URL
}

func (e *echoTarget) count(what string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[what]
}

func (e *echoTarget) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.seen {
		n += c
	}
	return n
}

// Issue 14 point 1: team B's job "1" after team A's job "1" in another
// batch was dropped (within the dedup window) or skipped (after it), and B
// got A's result, A's body included. The same id with another request is
// another job; the same file again sends nothing twice, within the dedup
// window and after it.
func TestSameIDOtherRequestIsAnotherJob(t *testing.T) {
	ns := natstest.RunServer(t)
	tg, url := newEchoTarget(t)
	fileA := writeFile(t, "a.jsonl", `{"id":"1","url":"`+url+`/a"}`+"\n")
	fileB := writeFile(t, "b.jsonl", `{"id":"1","method":"POST","url":"`+url+`/b","data":"from B"}`+"\n")

	// A is still queued when B comes: the dedup window holds A's id.
	outA := enqueueRun(t, ns, runOpts{batch: "teamA"}, fileInputs(t, fileA))
	outB := enqueueRun(t, ns, runOpts{batch: "teamB", wait: true, afterPublish: func() { startWorkers(t, ns, 1) }}, fileInputs(t, fileB))
	if outA.rep.Published != 1 || outB.rep.Published != 1 || outB.rep.Duplicates != 0 || outB.rep.CompletedEarlier != 0 {
		t.Fatalf("A published %d; B published %d, %d duplicates, %d completed earlier; want 1, 1, 0, 0",
			outA.rep.Published, outB.rep.Published, outB.rep.Duplicates, outB.rep.CompletedEarlier)
	}
	checkResult(t, outB, "1", "teamB", "POST /b from B")
	waitFor(t, func() bool { return tg.total() == 2 && jobsLeft(t, ns) == 0 }) // A's job runs too, and ends

	// Within the dedup window: each file again sends nothing and gets its
	// own stored result.
	againA := enqueueRun(t, ns, runOpts{batch: "teamA-2", wait: true}, fileInputs(t, fileA))
	checkResult(t, againA, "1", "teamA", "GET /a ")
	// After it (the stream forgets ids as when the window passes): the
	// completion markers alone keep jobs apart.
	forgetJobIDs(t, ns)
	againB := enqueueRun(t, ns, runOpts{batch: "teamB-2", wait: true}, fileInputs(t, fileB))
	checkResult(t, againB, "1", "teamB", "POST /b from B")
	if againA.rep.CompletedEarlier != 1 || againB.rep.CompletedEarlier != 1 || againA.rep.Published+againB.rep.Published != 0 {
		t.Errorf("re-runs: A %+v, B %+v; want each completed earlier, nothing published", againA.rep, againB.rep)
	}
	if tg.count("GET /a") != 1 || tg.count("POST /b") != 1 || tg.total() != 2 {
		t.Errorf("target saw %v, want GET /a and POST /b once each", tg.seen)
	}
}

// An untrusted file cannot pre-claim a later real job by its id: the decoy
// completes, the real job with that id is still sent, with its own result.
func TestIDCannotBePreclaimed(t *testing.T) {
	ns := natstest.RunServer(t)
	tg, url := newEchoTarget(t)
	stop := startWorkers(t, ns, 1)
	decoy := writeFile(t, "decoy.jsonl", `{"id":"invoice-7","url":"`+url+`/decoy"}`+"\n")
	real := writeFile(t, "real.jsonl", `{"id":"invoice-7","method":"POST","url":"`+url+`/pay","data":"42"}`+"\n")
	enqueueRun(t, ns, runOpts{batch: "untrusted", wait: true}, fileInputs(t, decoy))
	stop()
	forgetJobIDs(t, ns)    // however long ago the decoy ran
	startWorkers(t, ns, 1) // on the jobs stream made anew
	out := enqueueRun(t, ns, runOpts{batch: "real", wait: true}, fileInputs(t, real))
	if out.rep.Published != 1 || out.rep.CompletedEarlier != 0 {
		t.Fatalf("real job: %+v; want it published", out.rep)
	}
	checkResult(t, out, "invoice-7", "real", "POST /pay 42")
	if tg.count("POST /pay") != 1 {
		t.Errorf("target saw %v", tg.seen)
	}
}

// Rotating a credential changes no job: the request done with the old
// token is not sent again with the new one.
func TestRotatedTokenSendsNothingAgain(t *testing.T) {
	ns := natstest.RunServer(t)
	tg, url := newEchoTarget(t)
	startWorkers(t, ns, 1)
	line := func(token string) string {
		return `{"id":"r1","method":"POST","url":"` + url + `/r?api_key=` + token + `","headers":{"Authorization":"Bearer ` + token + `"},"data":"x"}` + "\n"
	}
	enqueueRun(t, ns, runOpts{batch: "old-token", wait: true}, fileInputs(t, writeFile(t, "a.jsonl", line("old"))))
	forgetJobIDs(t, ns)
	out := enqueueRun(t, ns, runOpts{batch: "new-token", wait: true}, fileInputs(t, writeFile(t, "a.jsonl", line("new"))))
	if out.rep.CompletedEarlier != 1 || out.rep.Published != 0 {
		t.Errorf("rotated token: %+v; want the job completed earlier", out.rep)
	}
	checkResult(t, out, "r1", "old-token", "POST /r x")
	if tg.total() != 1 {
		t.Errorf("target saw %v, want one request", tg.seen)
	}
}

// A marker the previous version wrote names an id, not a request: a job
// with that id is neither sent (it may be the same request) nor given that
// result (it may be another): it is refused, loudly, with its FILE:LINE.
// One whose earlier run sent nothing is sent.
func TestLegacyMarkerRefusesItsID(t *testing.T) {
	ns := natstest.RunServer(t)
	nc, js := connect(t, ns)
	defer nc.Close()
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, names.DoneBucket())
	if err != nil {
		t.Fatal(err)
	}
	put := func(m queue.DoneMarker) {
		v, _ := json.Marshal(m)
		if _, err := kv.Put(ctx, queue.LegacyDoneKeyOf(m.ID).String(), v); err != nil {
			t.Fatal(err)
		}
	}
	put(queue.DoneMarker{ID: "sent", Batch: "v0", Seq: 1, OK: true, Attempts: 1})
	put(queue.DoneMarker{ID: "unsent", Batch: "v0", Seq: 2, Reason: job.ReasonExpired})
	legacy, err := queue.NewDoneIndex(js, names).HasLegacy(ctx)
	if err != nil || !legacy {
		t.Fatalf("legacy markers: %v %v", legacy, err)
	}
	path := writeFile(t, "a.jsonl", `{"id":"sent","url":"http://127.0.0.1:9/x"}`+"\n"+
		`{"id":"unsent","url":"http://127.0.0.1:9/y"}`+"\n"+`{"id":"new","url":"http://127.0.0.1:9/z"}`+"\n")
	v, err := enqueue.Prepare(fileInputs(t, path), func(j *job.Job) { j.Batch, j.EnqueuedAt = "v1", time.Now().UTC() })
	if err != nil {
		t.Fatal(err)
	}
	defer v.Spool.Close()
	rep, err := enqueue.Publish(ctx, js, v.Spool, enqueue.PublishOptions{
		Batch: "v1", Names: names, Done: queue.NewDoneIndex(js, names), Legacy: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Published != 2 || len(rep.Failed) != 1 || rep.Failed[0].ID != "sent" {
		t.Fatalf("published %d, refused %v; want 2 published and job sent refused", rep.Published, rep.Failed)
	}
	var le *enqueue.LegacyMarkerError
	if !errors.As(rep.Failed[0], &le) || le.Batch != "v0" || !strings.HasPrefix(rep.Failed[0].Error(), `job "sent": `+path+":1: ") {
		t.Errorf("refusal: %v", rep.Failed[0])
	}
}

// checkResult requires the run's result for id: stored by batch, from the
// request whose echo starts with body.
func checkResult(t *testing.T, out runOutcome, id, batch, body string) {
	t.Helper()
	r := out.results[id]
	if r == nil {
		t.Fatalf("no result for %s (results %v)", id, out.results)
	}
	if r.Batch != batch || !r.OK || !strings.HasPrefix(r.Body, body) {
		t.Errorf("result of %s: batch %s ok %v body %q; want batch %s, body %q", id, r.Batch, r.OK, r.Body, batch, body)
	}
}

// waitFor polls cond; the bound only ends a broken test.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two inputs of one run numbered "1", "2"… with different requests would
// put two jobs with one id in one batch: refused as FILE:LINE, like a
// duplicate id within a file. The same request under the same id is one
// job, in one run as in two.
func TestIDAcrossInputsNamesOneRequest(t *testing.T) {
	a := writeFile(t, "a.jsonl", `{"id":"1","url":"http://127.0.0.1:9/a"}`+"\n"+`{"id":"2","url":"http://127.0.0.1:9/same"}`+"\n")
	b := writeFile(t, "b.jsonl", `{"id":"2","url":"http://127.0.0.1:9/same"}`+"\n"+`{"id":"1","method":"POST","url":"http://127.0.0.1:9/b"}`+"\n")
	v, err := enqueue.Prepare(fileInputs(t, a, b), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Spool.Close()
	if v.Valid != 3 || v.Invalid != 1 || len(v.Errors) != 1 {
		t.Fatalf("valid %d, invalid %d (%v); want 3 and 1", v.Valid, v.Invalid, v.Errors)
	}
	if got, want := v.Errors[0].Error(), b+`:2: id "1" is the id of another request in `+a; !strings.HasPrefix(got, want) {
		t.Errorf("error %q, want %q…", got, want)
	}
}
