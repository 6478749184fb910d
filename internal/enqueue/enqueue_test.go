package enqueue_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
)

// Every input form validates the same way: JSON Lines and arrays, plain or
// gzip (told by content, not by name), from files or standard input.
func TestPrepareReadsEveryForm(t *testing.T) {
	const n = 50
	content := lines(n, "https://api.example.com/x")
	var arr strings.Builder
	arr.WriteString("[\n")
	for i, l := range strings.Split(strings.TrimSpace(content), "\n") {
		if i > 0 {
			arr.WriteString(",\n")
		}
		arr.WriteString(strings.Replace(l, `"job-`, `"arr-`, 1))
	}
	arr.WriteString("\n]\n")
	plain := writeFile(t, "a.jsonl", content)
	// Compressed, named like anything: detected by its magic bytes.
	packed := filepath.Join(t.TempDir(), "b.data")
	if err := os.WriteFile(packed, gz(t, strings.ReplaceAll(content, `"job-`, `"gz-`)), 0o644); err != nil {
		t.Fatal(err)
	}
	ins, err := enqueue.OpenInputs([]string{plain, packed, "-"}, bytes.NewReader(gz(t, arr.String())))
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	v, err := enqueue.Prepare(ins, func(j *job.Job) {
		j.Batch = "b1"
		seen = append(seen, j.ID)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Spool.Close()
	if v.Valid != 3*n || v.Invalid != 0 || v.Spool.Len() != 3*n {
		t.Fatalf("valid %d, invalid %d, spooled %d; want %d, 0, %d", v.Valid, v.Invalid, v.Spool.Len(), 3*n, 3*n)
	}
	for i, want := range []string{"job-00000", "gz-00000", "arr-00000"} {
		if seen[i*n] != want {
			t.Errorf("entry %d is %s, want %s (inputs in order)", i*n, seen[i*n], want)
		}
	}
}

// Invalid entries are reported as FILE:LINE, counted exactly, and reading
// goes on; a compressed file reports the lines of its content.
func TestPrepareReportsInvalidLines(t *testing.T) {
	content := `{"id":"a","url":"https://x.example/1"}
{"id":"b","url":"ftp://x.example/2"}
not json
{"id":"a","url":"https://x.example/3"}
{"id":"c","url":"https://x.example/4"}
`
	path := filepath.Join(t.TempDir(), "bad.jsonl.gz")
	if err := os.WriteFile(path, gz(t, content), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := enqueue.Prepare(fileInputs(t, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Spool.Close()
	if v.Valid != 2 || v.Invalid != 3 {
		t.Fatalf("valid %d invalid %d, want 2 and 3", v.Valid, v.Invalid)
	}
	for i, line := range []string{":2:", ":3:", ":4:"} {
		if got := v.Errors[i].Error(); !strings.HasPrefix(got, path+line) {
			t.Errorf("error %d = %q, want prefix %q", i, got, path+line)
		}
	}
}

func TestPrepareRejectsBrokenGzip(t *testing.T) {
	data := gz(t, lines(100, "https://x.example/"))
	path := writeFile(t, "cut.gz", string(data[:len(data)/2]))
	if v, err := enqueue.Prepare(fileInputs(t, path), nil); err == nil {
		v.Spool.Close()
		t.Fatal("a truncated gzip file was accepted")
	}
	if _, err := enqueue.OpenInputs([]string{"-", "-"}, strings.NewReader("")); err == nil {
		t.Error("standard input twice was accepted")
	}
}

func TestPublishAndCollect(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	startWorkers(t, ns, 2)

	const n = 300
	content := lines(n-5, srv.URL+"/ok") +
		// Permanent failures and one retry each, for the summary.
		`{"id":"gone-1","url":"` + srv.URL + `/x?status=404"}` + "\n" +
		`{"id":"gone-2","url":"` + srv.URL + `/x?status=410"}` + "\n" +
		`{"id":"flaky-1","url":"` + srv.URL + `/x?fail_first=1"}` + "\n" +
		`{"id":"flaky-2","url":"` + srv.URL + `/x?fail_first=1"}` + "\n" +
		`{"id":"flaky-3","url":"` + srv.URL + `/x?fail_first=1"}` + "\n"
	out := enqueueRun(t, ns, runOpts{batch: "pc", wait: true}, fileInputs(t, writeFile(t, "jobs.jsonl", content)))

	if out.rep.Published != n || out.rep.CompletedEarlier != 0 || out.rep.Duplicates != 0 {
		t.Fatalf("report %+v", out.rep)
	}
	s := out.summary
	if s.Total != n || s.OK != n-2 || s.Failed != 2 || s.ByReason[string(job.ReasonPermanent)] != 2 || s.Retries != 3 || s.CompletedEarlier != 0 {
		t.Errorf("summary: %s (%+v)", s.String(), s.ByReason)
	}
	if !strings.HasPrefix(s.String(), "300 results: 298 ok, 2 failed (permanent 2); 3 retries; latency p50 ") {
		t.Errorf("summary line: %s", s.String())
	}
	if len(out.results) != n {
		t.Errorf("%d results, want %d", len(out.results), n)
	}
}

// The re-run contract: a file enqueued again after the jobs stream has
// forgotten its ids (its dedup window passed; here the stream is created
// anew, which forgets the same way) publishes only the jobs no run has
// completed, sends no request twice, and --wait returns every result,
// earlier ones included.
func TestRerunAfterDedupWindowSendsNothingTwice(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	stop := startWorkers(t, ns, 2)

	first := lines(300, srv.URL+"/a")
	out := enqueueRun(t, ns, runOpts{batch: "first", wait: true}, fileInputs(t, writeFile(t, "a.jsonl", first)))
	if len(out.results) != 300 {
		t.Fatalf("first run: %d results", len(out.results))
	}
	stop()
	forgetJobIDs(t, ns)

	// No worker: every job is done, so none must be needed. (300 is past
	// the point where the earlier results are read with one consumer, not
	// one by one.)
	out = enqueueRun(t, ns, runOpts{batch: "second", wait: true}, fileInputs(t, writeFile(t, "a.jsonl", first)))
	if out.rep.CompletedEarlier != 300 || out.rep.Published != 0 {
		t.Fatalf("second run: %d completed earlier, %d published; want 300 and 0", out.rep.CompletedEarlier, out.rep.Published)
	}
	if out.summary.Total != 300 || out.summary.CompletedEarlier != 300 || out.summary.OK != 300 {
		t.Errorf("second run summary: %s", out.summary.String())
	}
	for id, r := range out.results {
		if r.Batch != "first" {
			t.Errorf("%s: result of batch %s, want the stored one of batch first", id, r.Batch)
		}
	}

	// The same file with lines added: only those are sent.
	startWorkers(t, ns, 1)
	grown := first + strings.ReplaceAll(lines(50, srv.URL+"/a"), `"job-`, `"new-`)
	out = enqueueRun(t, ns, runOpts{batch: "third", wait: true}, fileInputs(t, writeFile(t, "a.jsonl", grown)))
	if out.rep.CompletedEarlier != 300 || out.rep.Published != 50 || out.summary.Total != 350 || out.summary.CompletedEarlier != 300 {
		t.Errorf("third run: %d done, %d published; %s", out.rep.CompletedEarlier, out.rep.Published, out.summary.String())
	}
	if st := tg.Stats(); st.Requests != 350 || st.Duplicates != 0 {
		t.Errorf("target saw %d requests and %d duplicates, want 350 and 0", st.Requests, st.Duplicates)
	}
}

// --force sends every job again, even completed ones and within the dedup
// window.
func TestForceSendsAgain(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	startWorkers(t, ns, 2)
	path := writeFile(t, "a.jsonl", lines(40, srv.URL+"/f"))
	enqueueRun(t, ns, runOpts{batch: "one", wait: true}, fileInputs(t, path))
	out := enqueueRun(t, ns, runOpts{batch: "two", wait: true, force: true}, fileInputs(t, path))
	if out.rep.Published != 40 || out.summary.Total != 40 || out.summary.CompletedEarlier != 0 {
		t.Fatalf("forced run: %d published; %s", out.rep.Published, out.summary.String())
	}
	for id, r := range out.results {
		if r.Batch != "two" {
			t.Errorf("%s: result of batch %s, want two", id, r.Batch)
		}
	}
	if st := tg.Stats(); st.Requests != 80 || st.Duplicates != 40 {
		t.Errorf("target saw %d requests (%d repeats), want 80 (40)", st.Requests, st.Duplicates)
	}
}

// Enqueueing a file again while its first run is still queued publishes no
// duplicate job; --wait waits for the first run's jobs and returns their
// results.
func TestRerunWhileFirstRunIsQueued(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	path := writeFile(t, "a.jsonl", lines(100, srv.URL+"/q"))
	enqueueRun(t, ns, runOpts{batch: "queued"}, fileInputs(t, path)) // no worker yet
	out := enqueueRun(t, ns, runOpts{batch: "again", wait: true, afterPublish: func() { startWorkers(t, ns, 2) }}, fileInputs(t, path))
	if out.rep.Duplicates != 100 || out.rep.Published != 0 {
		t.Fatalf("second run: %d duplicates, %d published; want 100 and 0", out.rep.Duplicates, out.rep.Published)
	}
	if out.summary.Total != 100 || out.summary.OK != 100 {
		t.Errorf("summary: %s", out.summary.String())
	}
	for id, r := range out.results {
		if r.Batch != "queued" {
			t.Errorf("%s: result of batch %s, want queued", id, r.Batch)
		}
	}
	if st := tg.Stats(); st.Requests != 100 || st.Duplicates != 0 {
		t.Errorf("target saw %d requests and %d duplicates, want 100 and 0", st.Requests, st.Duplicates)
	}
}

// A completion marker whose result has been purged gives an unknown
// outcome, counted as missing, not a job sent again.
func TestRerunWithPurgedResultsCountsMissing(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	stop := startWorkers(t, ns, 1)
	path := writeFile(t, "a.jsonl", lines(60, srv.URL+"/p"))
	enqueueRun(t, ns, runOpts{batch: "kept", wait: true}, fileInputs(t, path))
	stop()
	forgetJobIDs(t, ns)
	nc, js := connect(t, ns)
	defer nc.Close()
	st, err := js.Stream(context.Background(), names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := enqueueRun(t, ns, runOpts{batch: "later", wait: true}, fileInputs(t, path))
	if out.rep.CompletedEarlier != 60 || out.summary.Missing != 60 || out.summary.Total != 0 {
		t.Errorf("%d completed earlier; summary %s (missing %d)", out.rep.CompletedEarlier, out.summary.String(), out.summary.Missing)
	}
	if got := tg.Stats().Requests; got != 60 {
		t.Errorf("target saw %d requests, want 60", got)
	}
}

// forgetJobIDs deletes the jobs stream, which forgets every de-duplication
// id exactly as the passing of the dedup window does, without waiting for it.
func forgetJobIDs(t *testing.T, ns *server.Server) {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), names.JobsStream()); err != nil {
		t.Fatal(err)
	}
}
