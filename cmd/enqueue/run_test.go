package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/internal/workertest"
	"github.com/jetpost/jetpost/pkg/job"
)

var testNames = queue.NewNames("jetpost")

// The stream shape run() creates from the environment set by setEnv; the
// in-process workers use the same, so neither changes the other's streams.
var testStreams = queue.StreamConfig{Replicas: 1, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}

func setEnv(t *testing.T) {
	t.Setenv("JETPOST_DEDUP_WINDOW", "1m")
	t.Setenv("JETPOST_RESULTS_MAX_AGE", "1h")
	t.Setenv("JETPOST_NATS_URL", "")
	t.Setenv("JETPOST_SUBJECT_PREFIX", "jetpost")
	t.Setenv("JETPOST_LOG_FORMAT", "json")
}

type result struct {
	err            error
	stdout, stderr string
}

func (r result) code() int {
	if r.err == nil {
		return 0
	}
	if ee, ok := errors.AsType[*exitError](r.err); ok {
		return ee.code
	}
	return -1
}

func runCmd(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, bytes.NewReader(stdin), &stdout, &stderr)
	return result{err, stdout.String(), stderr.String()}
}

// startWorkers runs in-process workers against ns (internal/workertest);
// they stop when the test ends or stop is called.
func startWorkers(t *testing.T, ns *server.Server, n int) (stop func()) {
	t.Helper()
	return workertest.Start(t, ns.ClientURL(), workertest.Options{Workers: n, MaxAttempts: 3, Names: testNames, Streams: testStreams})
}

func connectJS(t *testing.T, ns *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	return nc, js
}

func jobLines(n int, url, prefix string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"id":"%s-%04d","url":"%s?n=%d"}`+"\n", prefix, i, url, i)
	}
	return b.String()
}

func write(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func streamMsgs(t *testing.T, ns *server.Server, stream string) uint64 {
	t.Helper()
	nc, js := connectJS(t, ns)
	defer nc.Close()
	st, err := js.Stream(context.Background(), stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// summaryOf decodes what --wait --json printed: one JSON document, the
// batch id inside, and nothing else on stdout.
func summaryOf(t *testing.T, stdout string) *enqueue.Summary {
	t.Helper()
	var doc struct {
		Batch string `json:"batch"`
		*enqueue.Summary
	}
	doc.Summary = new(enqueue.Summary)
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&doc); err != nil || dec.More() || !strings.HasSuffix(stdout, "}\n") || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("stdout is not one JSON document (%v):\n%s", err, stdout)
	}
	if !job.ValidBatch(doc.Batch) {
		t.Fatalf("the JSON document has no batch id: %s", stdout)
	}
	return doc.Summary
}

func TestRunWaitWritesResultsAndSummary(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	startWorkers(t, ns, 2)
	file := write(t, "jobs.jsonl", jobLines(97, srv.URL+"/ok", "ok")+
		`{"id":"nf","url":"`+srv.URL+`/x?status=404"}`+"\n"+
		`{"id":"retry-1","url":"`+srv.URL+`/x?fail_first=1"}`+"\n"+
		`{"id":"retry-2","url":"`+srv.URL+`/x?fail_first=2"}`+"\n")
	out := filepath.Join(t.TempDir(), "results.jsonl")

	r := runCmd(t, nil, "--nats", ns.ClientURL(), "--batch", "sum", "--wait", "--out", out, "--json", file)

	if r.code() != exitFailedJobs {
		t.Fatalf("exit %d (%v), want %d: one job failed\n%s", r.code(), r.err, exitFailedJobs, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, `{"batch":"sum",`) {
		t.Errorf("stdout does not start with the batch id: %q", r.stdout)
	}
	s := summaryOf(t, r.stdout)
	if s.Total != 100 || s.OK != 99 || s.Failed != 1 || s.ByReason["permanent"] != 1 || s.Retries != 3 || s.Attempts != 103 {
		t.Errorf("summary %+v", s)
	}
	if s.WallMS <= 0 || s.PerSec <= 0 || s.P99MS < s.P50MS {
		t.Errorf("summary times %+v", s)
	}
	for _, want := range []string{"batch sum: publishing 100 jobs", "batch sum: 100 published in "} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		res, err := job.DecodeResult([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		if got[res.ID] {
			t.Errorf("%s twice in --out", res.ID)
		}
		got[res.ID] = true
	}
	if len(got) != 100 {
		t.Errorf("--out has %d results, want 100", len(got))
	}
}

// Standard input, gzip-compressed, validated as a whole first: an invalid
// line publishes nothing (exit 2) unless --skip-invalid.
func TestRunStdinGzipAndSkipInvalid(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	ns := natstest.RunServer(t)
	content := jobLines(20, "https://api.example.com/a", "in") + "{\"id\":\"bad\",\"url\":\"nope\"}\n" + jobLines(5, "https://api.example.com/b", "tail")
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write([]byte(content))
	_ = zw.Close()

	r := runCmd(t, zipped.Bytes(), "--nats", ns.ClientURL(), "--batch", "stdin", "-")
	if r.code() != exitUsage || !strings.Contains(r.stderr, "<stdin>:21:") || !strings.Contains(r.err.Error(), "nothing was published") {
		t.Fatalf("exit %d, want %d with the line reported:\n%s", r.code(), exitUsage, r.stderr)
	}
	if n := streamMsgs(t, ns, testNames.JobsStream()); n != 0 {
		t.Fatalf("%d jobs published from invalid input", n)
	}

	r = runCmd(t, zipped.Bytes(), "--nats", ns.ClientURL(), "--batch", "stdin", "--skip-invalid", "-")
	if r.code() != 0 || r.stdout != "stdin\n" || !strings.Contains(r.stderr, "batch stdin: 25 published") {
		t.Fatalf("exit %d (%v), stdout %q:\n%s", r.code(), r.err, r.stdout, r.stderr)
	}
	if n := streamMsgs(t, ns, testNames.JobsStream()); n != 25 {
		t.Errorf("jobs stream holds %d jobs, want 25", n)
	}
}

// A re-run after the dedup window sends nothing and returns the stored
// results; `enqueue results` reads a batch's results later; --force needs a
// batch of its own and then sends again.
func TestRunRerunResultsAndForce(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	stop := startWorkers(t, ns, 2)
	file := write(t, "jobs.jsonl", jobLines(30, srv.URL+"/r", "r"))
	url := ns.ClientURL()

	if r := runCmd(t, nil, "--nats", url, "--batch", "r1", "--wait", "--quiet", file); r.code() != 0 {
		t.Fatalf("first run: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	stop()
	// Deleting the jobs stream forgets every job id, as the end of the
	// dedup window does.
	nc, js := connectJS(t, ns)
	if err := js.DeleteStream(context.Background(), testNames.JobsStream()); err != nil {
		t.Fatal(err)
	}
	nc.Close()

	r := runCmd(t, nil, "--nats", url, "--batch", "r2", "--wait", "--json", file)
	if r.code() != 0 {
		t.Fatalf("re-run: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	if !strings.Contains(r.stderr, "batch r2: 0 published, 30 completed by an earlier run and not sent again") {
		t.Errorf("re-run stderr:\n%s", r.stderr)
	}
	if s := summaryOf(t, r.stdout); s.Total != 30 || s.OK != 30 || s.CompletedEarlier != 30 {
		t.Errorf("re-run summary %+v", s)
	}
	if got := tg.Stats().Requests; got != 30 {
		t.Errorf("target saw %d requests, want 30", got)
	}

	out := filepath.Join(t.TempDir(), "r1.jsonl")
	r = runCmd(t, nil, "results", "r1", "--nats", url, "--out", out)
	if r.code() != 0 || !strings.Contains(r.stderr, "batch r1: 30 results written to") {
		t.Fatalf("results: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	data, _ := os.ReadFile(out)
	if n := strings.Count(string(data), "\n"); n != 30 {
		t.Errorf("results file has %d lines, want 30", n)
	}
	r = runCmd(t, nil, "results", "--nats", url, "r1")
	if r.code() != 0 || strings.Count(r.stdout, "\n") != 30 {
		t.Errorf("results to stdout: exit %d, %d lines", r.code(), strings.Count(r.stdout, "\n"))
	}
	r = runCmd(t, nil, "results", "--nats", url, "nothing-here")
	if r.code() != exitUnknownBatch || r.stdout != "" || !strings.Contains(r.err.Error(), "unknown batch nothing-here") {
		t.Errorf("results of an unknown batch: exit %d, stdout %q, stderr %s", r.code(), r.stdout, r.stderr)
	}

	r = runCmd(t, nil, "--nats", url, "--batch", "r1", "--force", file)
	if r.code() != exitUsage || !strings.Contains(r.err.Error(), "already has 30 results") {
		t.Errorf("--force into a batch with results: exit %d (%v)", r.code(), r.err)
	}
	startWorkers(t, ns, 1)
	r = runCmd(t, nil, "--nats", url, "--batch", "r3", "--force", "--wait", "--json", "--quiet", file)
	if r.code() != 0 {
		t.Fatalf("forced run: exit %d (%v)\n%s", r.code(), r.err, r.stderr)
	}
	if s := summaryOf(t, r.stdout); s.Total != 30 || s.CompletedEarlier != 0 {
		t.Errorf("forced summary %+v", s)
	}
	if st := tg.Stats(); st.Requests != 60 || st.Duplicates != 30 {
		t.Errorf("target saw %d requests (%d repeats), want 60 (30)", st.Requests, st.Duplicates)
	}
}

// A job the broker finally refuses is reported with its id, and the exit
// status is 3.
func TestRunReportsRefusedJobs(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		// Room for the streams and a few jobs, not for all of them.
		JetStreamMaxStore: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(30 * time.Second) { // a liveness bound, as natstest's
		t.Fatal("server not ready")
	}
	file := write(t, "jobs.jsonl", jobLines(1000, "https://api.example.com/some/long/path/to/fill/the/store", "full"))
	r := runCmd(t, nil, "--nats", ns.ClientURL(), "--batch", "full", "--quiet", file)
	if r.code() != exitBroker {
		t.Fatalf("exit %d (%v), want %d\n%s", r.code(), r.err, exitBroker, r.stderr)
	}
	t.Logf("%v; stderr:\n%.600s", r.err, r.stderr)
	if !strings.Contains(r.stderr, `not published: job "full-`) || !strings.Contains(r.stderr, "refused by the broker") {
		t.Errorf("stderr does not name the refused jobs:\n%s", r.stderr)
	}
}
