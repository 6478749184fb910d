package enqueue_test

import (
	"context"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/internal/workertest"
	"github.com/jetpost/jetpost/pkg/job"
)

// when is how a note says when an earlier batch completed its jobs.
var when = `(on|between) \d{4}-\d\d-\d\d \d\d:\d\d( and \d{4}-\d\d-\d\d \d\d:\d\d)? UTC`

func wantNote(t *testing.T, rep *enqueue.PublishReport, pattern string) {
	t.Helper()
	re := regexp.MustCompile(pattern)
	for _, n := range rep.RerunNotes() {
		if re.MatchString(n) {
			return
		}
	}
	t.Errorf("no note matches %q:\n%s", pattern, strings.Join(rep.RerunNotes(), "\n"))
}

// A re-run within the dedup window, into the batch whose jobs were refused
// before any request: those are sent again (once), the jobs another batch
// completed are not, --wait returns one result per job, the latest, and
// the refused jobs' dead letters are retired so a re-drive cannot send
// them once more.
func TestRerunSendsAgainOnlyWhatSentNothing(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	sent := lines(10, srv.URL+"/sent")
	refused := strings.ReplaceAll(lines(10, srv.URL+"/refused"), `"job-`, `"ref-`)

	stop := startWorkers(t, ns, 1)
	enqueueRun(t, ns, runOpts{batch: "sent", wait: true}, fileInputs(t, writeFile(t, "s.jsonl", sent)))
	stop()
	stop = workertest.Start(t, ns.ClientURL(), workertest.Options{MaxAttempts: 3, Names: names, Streams: streams, RefuseLoopback: true})
	out := enqueueRun(t, ns, runOpts{batch: "mixed", wait: true}, fileInputs(t, writeFile(t, "r.jsonl", refused)))
	stop()
	if s := out.summary; s.Failed != 10 || s.ByReason[string(job.ReasonRefused)] != 10 || s.Attempts != 0 {
		t.Fatalf("refusing worker: %s", s.String())
	}
	if n := tg.Stats().Requests; n != 10 {
		t.Fatalf("target saw %d requests, want 10", n)
	}

	startWorkers(t, ns, 2)
	both := writeFile(t, "both.jsonl", sent+refused)
	out = enqueueRun(t, ns, runOpts{batch: "mixed", wait: true}, fileInputs(t, both))
	if r := out.rep; r.CompletedEarlier != 10 || r.Resent != 10 || r.Published != 10 || r.Duplicates != 0 || r.RetireErr != nil {
		t.Fatalf("re-run report %+v", r)
	}
	if s := out.summary; s.Total != 20 || s.OK != 20 || s.CompletedEarlier != 10 {
		t.Errorf("re-run summary: %s", s.String())
	}
	for id, r := range out.results {
		if want := map[bool]string{true: "mixed", false: "sent"}[strings.HasPrefix(id, "ref-")]; r.Batch != want || !r.OK {
			t.Errorf("%s: ok %v in batch %s, want ok in %s", id, r.OK, r.Batch, want)
		}
	}
	if st := tg.Stats(); st.Requests != 20 || st.Duplicates != 0 {
		t.Errorf("target saw %d requests (%d repeats), want 20 (0)", st.Requests, st.Duplicates)
	}
	wantNote(t, out.rep, `^10 jobs were already completed by batch sent `+when+`; not sent again\. Use --force to send them again, or `+"`enqueue redrive sent`")
	wantNote(t, out.rep, `^10 jobs failed in batch mixed `+when+` before any request was sent .*; sent again\.$`)

	ctx := context.Background()
	nc, js := connect(t, ns)
	defer nc.Close()
	dead := 0
	if err := queue.DeadLetters(ctx, js, names, "mixed", func(queue.StoredDeadLetter) error { dead++; return nil }); err != nil || dead != 0 {
		t.Errorf("batch mixed keeps %d dead letters (%v), want 0: its jobs were sent again", dead, err)
	}
	latest := map[string]bool{}
	st, err := queue.ReadLatestResults(ctx, js, names, "mixed", func(_ uint64, data []byte) error {
		r, err := job.DecodeResult(data)
		if err == nil {
			latest[r.ID] = r.OK
		}
		return err
	})
	if err != nil || st.Results != 10 || st.Superseded != 10 || len(latest) != 10 {
		t.Errorf("latest results of batch mixed: %+v, %d ids, %v; want 10, 10 superseded", st, len(latest), err)
	}
	for id, ok := range latest {
		if !ok {
			t.Errorf("%s: latest result failed, want the ok one", id)
		}
	}

	// Everything is completed now: nothing is sent, and the notes say by
	// which batch.
	out = enqueueRun(t, ns, runOpts{batch: "third", wait: true}, fileInputs(t, both))
	if r := out.rep; r.CompletedEarlier != 20 || r.Published != 0 || r.Resent != 0 || out.summary.OK != 20 {
		t.Errorf("third run: report %+v, summary %s", r, out.summary.String())
	}
	wantNote(t, out.rep, `^10 jobs were already completed by batch mixed `+when)
	if n := tg.Stats().Requests; n != 20 {
		t.Errorf("target saw %d requests, want 20", n)
	}
}

// Jobs that expired before any request are sent again by a re-run; a
// second re-run while those are still queued (within the dedup window)
// publishes nothing more and waits for the new results, not the earlier
// run's failures.
func TestRerunSendsExpiredJobsAgainOnce(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	path := writeFile(t, "e.jsonl", lines(15, srv.URL+"/e"))

	stop := startWorkers(t, ns, 1) // maximum job age: 1h
	out := enqueueRun(t, ns, runOpts{batch: "old", wait: true, enqueuedAt: time.Now().Add(-2 * time.Hour)}, fileInputs(t, path))
	stop()
	if s := out.summary; s.Failed != 15 || s.ByReason[string(job.ReasonExpired)] != 15 {
		t.Fatalf("first run: %s", s.String())
	}

	out = enqueueRun(t, ns, runOpts{batch: "again"}, fileInputs(t, path)) // no worker: stays queued
	if r := out.rep; r.Resent != 15 || r.Published != 15 {
		t.Fatalf("re-run: %+v", r)
	}
	out = enqueueRun(t, ns, runOpts{batch: "once-more", wait: true, afterPublish: func() { startWorkers(t, ns, 2) }}, fileInputs(t, path))
	if r := out.rep; r.Resent != 0 || r.Duplicates != 15 || r.Published != 0 || len(r.RerunNotes()) != 0 {
		t.Fatalf("second re-run: %+v", r)
	}
	if s := out.summary; s.Total != 15 || s.OK != 15 {
		t.Errorf("second re-run summary: %s", s.String())
	}
	for id, r := range out.results {
		if r.Batch != "again" || !r.OK {
			t.Errorf("%s: ok %v in batch %s, want ok in again", id, r.OK, r.Batch)
		}
	}
	if st := tg.Stats(); st.Requests != 15 || st.Duplicates != 0 {
		t.Errorf("target saw %d requests (%d repeats), want 15 (0)", st.Requests, st.Duplicates)
	}
}
