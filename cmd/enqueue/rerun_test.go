package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
)

// A re-run says which batch completed its jobs and when, and how to send
// them again; after a re-drive, `enqueue results` and a --wait re-run (into
// the same batch id) give one result per job, the latest.
func TestRunRerunSaysWhatItDidAndResultsAreLatest(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	startWorkers(t, ns, 2) // 3 attempts: fail_first=3 fails, its re-drive succeeds
	file := write(t, "jobs.jsonl", jobLines(5, srv.URL+"/ok", "ok")+
		`{"id":"late-1","url":"`+srv.URL+`/x?fail_first=3"}`+"\n"+
		`{"id":"late-2","url":"`+srv.URL+`/y?fail_first=3"}`+"\n")
	url := ns.ClientURL()

	if r := runCmd(t, nil, "--nats", url, "--batch", "rr1", "--wait", "--quiet", file); r.code() != exitFailedJobs {
		t.Fatalf("first run: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	// --wait ends on the results; each job's completion marker is stored
	// after its result, before its ack: once no job is left, all are.
	waitUntil(t, func() bool { return streamMsgs(t, ns, testNames.JobsStream()) == 0 })
	r := runCmd(t, nil, "--nats", url, "--batch", "rr2", file)
	if r.code() != 0 || r.stdout != "rr2\n" {
		t.Fatalf("re-run: exit %d (%v), stdout %q\n%s", r.code(), r.err, r.stdout, r.stderr)
	}
	note := regexp.MustCompile("(?m)^7 jobs were already completed by batch rr1 (on|between) 20\\d\\d-\\d\\d-\\d\\d \\d\\d:\\d\\d.* UTC; " +
		"not sent again\\. Use --force to send them again, or `enqueue redrive rr1` for its failed ones\\.$")
	if !note.MatchString(r.stderr) || !strings.Contains(r.stderr, "batch rr2: 0 published, 7 completed by an earlier run and not sent again") {
		t.Errorf("re-run stderr:\n%s", r.stderr)
	}
	if n := tg.Stats().Requests; n != 11 {
		t.Fatalf("target saw %d requests, want 11", n)
	}

	redriven := watchDone(t, ns, "late-1", "late-2")
	if r := runCmd(t, nil, "redrive", "--nats", url, "rr1"); r.code() != 0 || !strings.Contains(r.stdout, "2 jobs re-driven") {
		t.Fatalf("redrive: exit %d (%v)\n%s%s", r.code(), r.err, r.stdout, r.stderr)
	}
	redriven()

	out := filepath.Join(t.TempDir(), "rr1.jsonl")
	r = runCmd(t, nil, "results", "rr1", "--nats", url, "--out", out)
	if r.code() != 0 || !strings.Contains(r.stderr, "batch rr1: 7 results written to "+out+" (2 superseded by a later run of the same job, left out)") {
		t.Errorf("results: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	wantLatest(t, out, 7)

	// Into the same batch id: its stored results are earlier runs', read
	// through the markers, which point at the latest.
	again := filepath.Join(t.TempDir(), "again.jsonl")
	r = runCmd(t, nil, "--nats", url, "--batch", "rr1", "--wait", "--json", "--quiet", "--out", again, file)
	if r.code() != 0 {
		t.Fatalf("re-run after the re-drive: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	s := summaryOf(t, r.stdout)
	if s.Total != 7 || s.OK != 7 || s.CompletedEarlier != 7 || len(s.EarlierRuns) != 1 || s.EarlierRuns[0].Batch != "rr1" || s.EarlierRuns[0].Completed != 7 {
		t.Errorf("summary %+v", s)
	}
	wantLatest(t, again, 7)
	if st := tg.Stats(); st.Requests != 13 {
		t.Errorf("target saw %d requests, want 13", st.Requests)
	}
}

// wantLatest checks a results file: n lines, one per job, every one ok.
func wantLatest(t *testing.T, path string, n int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		r, err := job.DecodeResult([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		if seen[r.ID] || !r.OK {
			t.Errorf("%s: seen before %v, ok %v; want one ok result", r.ID, seen[r.ID], r.OK)
		}
		seen[r.ID] = true
	}
	if len(seen) != n {
		t.Errorf("%s: %d jobs, want %d", path, len(seen), n)
	}
}

// watchDone starts watching the completion markers of ids and returns a
// function that waits until each says ok: a job's marker is stored after
// its result, so a re-run that looks it up must wait for it.
func watchDone(t *testing.T, ns *server.Server, ids ...string) (wait func()) {
	t.Helper()
	nc, js := connectJS(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	kv, err := js.KeyValue(ctx, testNames.DoneBucket())
	if err != nil {
		t.Fatal(err)
	}
	// A key holds the request's fingerprint too: watch every marker, keep
	// those of ids.
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		defer nc.Close()
		defer cancel()
		defer func() { _ = w.Stop() }()
		ok := map[string]bool{}
		for len(ok) < len(ids) {
			select {
			case e := <-w.Updates():
				var m queue.DoneMarker
				if e != nil && json.Unmarshal(e.Value(), &m) == nil && m.OK && want[m.ID] {
					ok[m.ID] = true
				}
			case <-ctx.Done():
				t.Fatalf("markers of %v: %d ok within a minute", ids, len(ok))
			}
		}
	}
}

// A file enqueued again with a line added before the others joins every
// result to its line in this file, also the results an earlier run stored
// with its own line numbers.
func TestRerunResultsCarryThisRunsSource(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	startWorkers(t, ns, 2)
	dir := t.TempDir()
	old := `{"url":"` + srv.URL + `/a"}` + "\n" + `{"url":"` + srv.URL + `/b"}` + "\n"
	file := filepath.Join(dir, "jobs.jsonl")
	if err := os.WriteFile(file, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	url := ns.ClientURL()
	if r := runCmd(t, nil, "--nats", url, "--batch", "src1", "--wait", "--quiet", file); r.code() != 0 {
		t.Fatalf("first run: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	if err := os.WriteFile(file, []byte(`{"url":"`+srv.URL+`/new"}`+"\n"+old), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.jsonl")
	if r := runCmd(t, nil, "--nats", url, "--batch", "src2", "--wait", "--quiet", "--out", out, file); r.code() != 0 {
		t.Fatalf("re-run: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"/new": file + ":1", "/a": file + ":2", "/b": file + ":3"}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d results, want 3:\n%s", len(lines), data)
	}
	for _, l := range lines {
		r, err := job.DecodeResult([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		path := strings.TrimPrefix(r.URL, srv.URL)
		if r.Source != want[path] {
			t.Errorf("result for %s: source %q, want %q", path, r.Source, want[path])
		}
	}
	if n := tg.Stats().Requests; n != 3 {
		t.Errorf("target saw %d requests, want 3 (nothing sent twice)", n)
	}
}
