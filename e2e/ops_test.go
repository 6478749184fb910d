package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
)

// opsAddr finds the operations endpoint's address in the worker's log.
func opsAddr(t *testing.T, p *proc) string {
	t.Helper()
	p.waitLine("serving /healthz")
	for _, line := range strings.Split(p.output(), "\n") {
		if strings.Contains(line, "serving /healthz") {
			var v struct{ Addr string }
			if err := json.Unmarshal([]byte(line), &v); err == nil && v.Addr != "" {
				return v.Addr
			}
		}
	}
	t.Fatal("no address in the worker's log")
	return ""
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric reads one sample (name with labels as in the exposition) or 0.
func metric(body, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// /metrics moves while a batch runs; /readyz answers 503 with a reason
// while NATS is down and recovers when it is back.
func TestMetricsAndReadiness(t *testing.T) {
	store := t.TempDir()
	ns := natstest.RunServerAt(t, -1, store)
	port := natstest.Port(ns)
	// Requests are held until the test has seen them in flight: a batch
	// that ran by faster than the test could look would prove nothing.
	held := &gate{}
	held.shut()
	releaseAll := held.open
	tg := target.New(target.Options{OnRequest: held.pass})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	defer releaseAll() // before srv.Close, which waits for held requests
	w := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_HTTP_ADDR=127.0.0.1:0", "JETPOST_MAX_INFLIGHT=4"))
	w.waitLine("consuming jobs")
	base := "http://" + opsAddr(t, w)
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	waitUntil(t, func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })

	file := writeJobs(t, 40, srv.URL)
	done := make(chan int, 1)
	go func() {
		code, _, _ := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "metrics", "--wait", file)
		done <- code
	}()
	// While the batch runs, jobs are in flight.
	waitUntil(t, func() bool {
		_, body := get(t, base+"/metrics")
		return metric(body, "jetpost_jobs_in_flight") > 0
	})
	releaseAll()
	if code := <-done; code != 0 {
		t.Fatalf("enqueue exit %d", code)
	}
	_, body := get(t, base+"/metrics")
	for series, want := range map[string]float64{
		`jetpost_jobs_total{outcome="ok"}`:         40,
		`jetpost_http_attempts_total{class="2xx"}`: 40,
		`jetpost_request_duration_seconds_count`:   40,
		`jetpost_jobs_in_flight`:                   0,
		`jetpost_nats_reconnects_total`:            0,
		`jetpost_requests_queued`:                  0,
	} {
		if got := metric(body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}

	// NATS goes away: not ready, with the reason.
	ns.Shutdown()
	ns.WaitForShutdown()
	waitUntil(t, func() bool {
		code, body := get(t, base+"/readyz")
		return code == 503 && strings.Contains(body, "NATS")
	})
	natstest.RunServerAt(t, port, store)
	waitUntil(t, func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })
	_, body = get(t, base+"/metrics")
	if metric(body, "jetpost_nats_reconnects_total") < 1 {
		t.Error("reconnect not counted")
	}
}

// Without an allow-list, jobs aimed at loopback or the cloud metadata
// address fail at once with a clear reason and the target receives nothing.
func TestSSRFGuardRefusesByDefault(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	w := start(t, "worker", []string{"JETPOST_NATS_URL=" + ns.ClientURL()})
	w.waitLine("consuming jobs")
	path := filepath.Join(t.TempDir(), "ssrf.jsonl")
	content := fmt.Sprintf(`{"id":"loopback","url":"%s/admin"}
{"id":"metadata","url":"http://169.254.169.254/latest/meta-data/"}
{"id":"localhost-name","url":"http://localhost:%s/x"}
`, srv.URL, strings.Split(srv.URL, ":")[2])
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.jsonl")
	code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--wait", "--out", out, path)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (jobs failed): %s", code, stderr)
	}
	for id, r := range readResults(t, out) {
		if r.OK || r.Reason != "refused" || r.Attempts != 0 || !strings.Contains(r.Error, "JETPOST_ALLOWED_NETWORKS") {
			t.Errorf("%s: %+v", id, r)
		}
	}
	if n := tg.Stats().Requests; n != 0 {
		t.Errorf("target received %d requests", n)
	}
}

// A secret placed in a job's headers or URL appears in no log line, result
// or dead-letter listing.
func TestSecretsNeverShown(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	w := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_LOG_LEVEL=debug", "JETPOST_MAX_ATTEMPTS=2"))
	w.waitLine("consuming jobs")
	host := strings.TrimPrefix(srv.URL, "http://")
	path := filepath.Join(t.TempDir(), "secret.jsonl")
	content := fmt.Sprintf(`{"id":"s1","url":"%s/x?status=404","headers":{"Authorization":"Bearer TOPSECRET-1","Cookie":"sid=TOPSECRET-2","X-Api-Key":"TOPSECRET-6"}}
{"id":"s2","url":"http://user:TOPSECRET-3@%s/y?status=503","headers":{"Proxy-Authorization":"Basic TOPSECRET-4"}}
{"id":"s3","url":"http://user:TOPSECRET-5@127.0.0.1:1/unreachable"}
{"id":"s4","url":"%s/z?status=404&api_key=TOPSECRET-7","callback":"%s/cb?status=500&access_token=TOPSECRET-8"}
`, srv.URL, host, srv.URL, srv.URL)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.jsonl")
	code, stdout, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--wait", "--out", out, path)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	results, _ := os.ReadFile(out)
	// Every job failed; a result is stored before its dead letter.
	waitUntil(t, func() bool { return streamMessages(t, ns.ClientURL(), queue.NewNames("jetpost").DLQStream()) == 4 })
	_, dlq, dlqErr := runEnqueue(t, []string{"JETPOST_REDACT_HEADERS=x-api-key"}, "dlq", "--nats", ns.ClientURL(), "--json")
	_, table, _ := runEnqueue(t, nil, "dlq", "--nats", ns.ClientURL())
	if !strings.Contains(dlq, `"s1"`) || !strings.Contains(dlq, "REDACTED") {
		t.Errorf("dead-letter listing lacks the jobs or the redaction: %s %s", dlq, dlqErr)
	}
	for name, text := range map[string]string{
		"worker log": w.output(), "results": string(results), "enqueue output": stdout + stderr,
		"dlq --json": dlq, "dlq table": table,
	} {
		if strings.Contains(text, "TOPSECRET") {
			t.Errorf("a secret appears in the %s:\n%s", name, text)
		}
	}
}

// waitUntil polls; the bound only ends a broken test.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 90s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A job larger than the server's maximum payload is an input error: named by
// file and line with the limit, and nothing of the file is published. The
// too-large job comes after more than a hundred large ones that fit, so it is
// found however many large jobs precede it.
func TestJobTooLargeForServerIsRejectedAtEnqueue(t *testing.T) {
	ns := natstest.RunServerWith(t, &server.Options{MaxPayload: 128 << 10})
	path := filepath.Join(t.TempDir(), "big.jsonl")
	var content strings.Builder
	content.WriteString("{\"id\":\"a\",\"url\":\"https://example.com/a\"}\n")
	fits := strings.Repeat("x", 70<<10) // large, but under the server's limit
	for i := range enqueue.MaxReported + 1 {
		fmt.Fprintf(&content, "{\"id\":\"f%d\",\"url\":\"https://example.com/f\",\"data\":\"%s\"}\n", i, fits)
	}
	fmt.Fprintf(&content, "{\"id\":\"b\",\"url\":\"https://example.com/b\",\"data\":\"%s\"}\n", strings.Repeat("x", 200<<10))
	if err := os.WriteFile(path, []byte(content.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	tooLarge := fmt.Sprintf("big.jsonl:%d:", enqueue.MaxReported+3)
	code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), path)
	if code != 2 || !strings.Contains(stderr, tooLarge) || !strings.Contains(stderr, "131072") || !strings.Contains(stderr, "1 jobs are too large") || !strings.Contains(stderr, "nothing was published") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if n := streamMessages(t, ns.ClientURL(), "JETPOST_JOBS"); n != 0 {
		t.Errorf("%d jobs published", n)
	}
}

func streamMessages(t *testing.T, url, stream string) uint64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// A job that fits the server's max_payload can still make a result or a dead
// letter that does not: a large response body, or the job copied into its
// dead letter. Neither may stall the job: each ends with exactly one stored
// result, the dead letter keeps the job for redrive when it can, and a job
// too close to the limit to share a message with its failure is recorded as
// not kept, which dlq and redrive say.
func TestOversizedResultAndDeadLetterStillSettle(t *testing.T) {
	const maxPayload = 128 << 10
	ns := natstest.RunServerWith(t, &server.Options{MaxPayload: maxPayload})
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	w := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_MAX_RESPONSE_BYTES=200000"))
	w.waitLine("consuming jobs")

	data := strings.Repeat("x", 90<<10)
	lines := fmt.Sprintf(`{"id":"big-body","url":"%[1]s/a?size=150000"}
{"id":"big-dead-letter","url":"%[1]s/b?status=404&size=60000","data":"%[2]s"}
`, srv.URL, data)
	// The largest job enqueue accepts (its encoding within 1 KiB of
	// max_payload) less a margin for the clock's digits: its dead letter
	// cannot hold it as well as the failure.
	atLimit := func(pad int) string {
		return fmt.Sprintf(`{"id":"huge-dead-letter","url":"%s/c?status=404","data":"%s"}`, srv.URL, strings.Repeat("y", pad))
	}
	j, err := job.NewDecoder(strings.NewReader(atLimit(0)), "probe").Next()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "big.jsonl")
	j.Batch, j.EnqueuedAt, j.Source = "maxp", time.Now().UTC(), job.SourceOf(path, 3)
	small, _ := job.Encode(j)
	lines += atLimit(maxPayload-1<<10-len(small)-40) + "\n"
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}

	// Not a job at all, and as large as the server takes: quoted into its
	// dead letter it grows past the limit.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	names := queue.NewNames("jetpost")
	if _, err := js.Publish(t.Context(), names.JobSubject("maxp"), []byte(strings.Repeat("<", maxPayload-1<<10))); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return streamMessages(t, ns.ClientURL(), names.DLQStream()) == 1 })

	out := filepath.Join(t.TempDir(), "out.jsonl")
	code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "maxp", "--wait", "--out", out, path)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (two jobs failed): %s", code, stderr)
	}
	results := readResults(t, out)
	if r := results["big-body"]; r == nil || !r.OK || !r.BodyTruncated || len(r.Body) < 100<<10 {
		t.Errorf("big-body: %+v; want ok with most of its body, cut to fit", r)
	}
	for _, id := range []string{"big-dead-letter", "huge-dead-letter"} {
		if r := results[id]; r == nil || r.OK || r.Status != 404 || r.Reason != "permanent" {
			t.Errorf("%s: %+v; want a permanent 404", id, r)
		}
	}
	// A result is stored before its dead letter: the last one may still be
	// on its way when enqueue --wait returns.
	waitUntil(t, func() bool { return streamMessages(t, ns.ClientURL(), names.DLQStream()) == 3 })
	_, dlq, dlqErr := runEnqueue(t, nil, "dlq", "--nats", ns.ClientURL(), "--json")
	if !strings.Contains(dlq, `"big-dead-letter"`) || !strings.Contains(dlq, data) {
		t.Errorf("dead letter missing, or without the job's data: %.300s %s", dlq, dlqErr)
	}
	if !strings.Contains(dlq, `"huge-dead-letter"`) || strings.Count(dlq, "not kept") != 2 || strings.Contains(dlq, "yyyyyyyy") || !strings.Contains(dlq, `"invalid"`) {
		t.Errorf("the job at the limit and the invalid message: dead letters missing, or not marked as not kept: %.300s", dlq)
	}
	// Every job settles (the last ack may trail its dead letter).
	waitUntil(t, func() bool { return streamMessages(t, ns.ClientURL(), names.JobsStream()) == 0 })
	code, stdout, stderr := runEnqueue(t, nil, "redrive", "maxp", "--nats", ns.ClientURL())
	if code != 0 || !strings.Contains(stdout, "1 jobs re-driven, 2 skipped") || !strings.Contains(stderr, "enqueue it again") {
		t.Errorf("redrive: exit %d\n%s%s", code, stdout, stderr)
	}
}
