package e2e

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
)

// breakerEnv is a worker quick to retry and to probe, with the default
// failure-rate breaker.
func breakerEnv(natsURL string, extra ...string) []string {
	return workerEnv(natsURL, append([]string{"JETPOST_MAX_ATTEMPTS=4", "JETPOST_MAX_INFLIGHT=8",
		"JETPOST_ADAPTIVE_CONCURRENCY=false", "JETPOST_BREAKER_OPEN_TIMEOUT=200ms"}, extra...)...)
}

// writeLines writes JSON Lines jobs, one per URL, ids PREFIX-NNNNN (ids
// are identities across batches: a job done before is not sent again).
func writeLines(t *testing.T, prefix string, urls []string) string {
	t.Helper()
	var b strings.Builder
	for i, u := range urls {
		fmt.Fprintf(&b, `{"id":"%s-%05d","url":%q}`+"\n", prefix, i, u)
	}
	path := filepath.Join(t.TempDir(), "jobs.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Issue 12: a file mixing an always-503 endpoint with healthy ones on the
// same host. The broken jobs fail after their tries, the healthy ones
// succeed, every job has one result, and nothing waits on a breaker. One
// line in 50 is broken, so whatever the timing the failures stay far below
// half the host's answers (the breaker's default ratio).
func TestBrokenEndpointAmongHealthyOnes(t *testing.T) {
	ns := natstest.RunServer(t)
	srv := httptest.NewServer(target.New(target.Options{}))
	defer srv.Close()
	// A window longer than any run: on a machine so loaded that the run
	// took minutes, the healthy answers must not leave it before the
	// broken endpoint's last retries.
	w := start(t, "worker", breakerEnv(ns.ClientURL(), "JETPOST_BREAKER_WINDOW=1h"))
	w.waitLine("consuming jobs")
	const n, every = 500, 50
	urls := make([]string, n)
	for i := range urls {
		urls[i] = fmt.Sprintf("%s/orders/%d", srv.URL, 100+i)
		if i%every == every-1 {
			urls[i] = srv.URL + "/orders/7?status=503"
		}
	}
	out := filepath.Join(t.TempDir(), "results.jsonl")
	start := time.Now()
	code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "mixed", "--wait", "--out", out, writeLines(t, "job", urls))
	t.Logf("%d jobs in %v", n, time.Since(start).Round(time.Millisecond))
	if code == 0 {
		t.Errorf("enqueue exit 0 with failed jobs: %s", stderr)
	}
	res := readResults(t, out)
	if len(res) != n {
		t.Fatalf("%d results for %d jobs", len(res), n)
	}
	broken := 0
	for i := range urls {
		id := fmt.Sprintf("job-%05d", i)
		r := res[id]
		switch {
		case r == nil:
			t.Errorf("%s: no result", id)
		case i%every != every-1 && (!r.OK || r.Attempts != 1):
			t.Errorf("%s (healthy): ok=%v attempts=%d reason=%s %s", id, r.OK, r.Attempts, r.Reason, r.Error)
		case i%every == every-1:
			broken++
			// Every try sent: the host's breaker never took one.
			if r.OK || r.Attempts != 4 || r.Reason != job.ReasonExhausted {
				t.Errorf("%s (broken): ok=%v attempts=%d reason=%s; want exhausted after its 4 attempts", id, r.OK, r.Attempts, r.Reason)
			}
		}
	}
	if want := fmt.Sprintf("%d results: %d ok, %d failed (exhausted %d)", n, n-broken, broken, broken); !strings.Contains(stderr, want) {
		t.Errorf("summary lacks %q:\n%s", want, stderr)
	}
	if strings.Contains(stderr, "breakers opened") {
		t.Errorf("the host's breaker opened for one broken endpoint:\n%s", stderr)
	}
}

// Issue 12: a whole host down. Its breaker opens, and stays open far
// longer than the test (JETPOST_BREAKER_OPEN_TIMEOUT=1h): jobs turned away
// spend their tries and fail with reason breaker_open instead of waiting
// for it. A batch enqueued while it is open is told so, and its jobs fail
// without a request.
func TestWholeHostDownJobsFailWithBreakerOpen(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{FailRate: 1})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	w := start(t, "worker", breakerEnv(ns.ClientURL(), "JETPOST_BREAKER_FAILURES=5", "JETPOST_BREAKER_OPEN_TIMEOUT=1h"))
	w.waitLine("consuming jobs")
	host := srv.Listener.Addr().String()

	run := func(batch string, n int, args ...string) (map[string]*job.Result, string, string) {
		t.Helper()
		urls := make([]string, n)
		for i := range urls {
			urls[i] = fmt.Sprintf("%s/orders/%d", srv.URL, i)
		}
		out := filepath.Join(t.TempDir(), batch+".jsonl")
		args = append([]string{"--nats", ns.ClientURL(), "--batch", batch, "--wait", "--out", out}, args...)
		code, stdout, stderr := runEnqueue(t, nil, append(args, writeLines(t, batch, urls))...)
		res := readResults(t, out)
		if code == 0 || len(res) != n {
			t.Fatalf("batch %s: exit %d, %d results for %d jobs: %s", batch, code, len(res), n, stderr)
		}
		return res, stdout, stderr
	}

	res, _, _ := run("down", 40)
	turned := 0
	for id, r := range res {
		switch {
		case r.OK || r.Attempts > 4:
			t.Errorf("%s: ok=%v attempts=%d", id, r.OK, r.Attempts)
		case r.Attempts < 4 && r.Reason != job.ReasonBreakerOpen, r.Attempts == 4 && r.Reason != job.ReasonExhausted:
			t.Errorf("%s: %d attempts, reason %s", id, r.Attempts, r.Reason)
		}
		if r.Reason == job.ReasonBreakerOpen {
			turned++
		}
	}
	if turned == 0 {
		t.Error("no job was turned away by the open breaker")
	}
	// Once the workers' board shows the breaker, a new batch sees it from
	// its start to its end.
	waitStatus(t, ns.ClientURL(), host)
	res, _, stderr := run("still-down", 5)
	for id, r := range res {
		if r.OK || r.Attempts != 0 || r.Reason != job.ReasonBreakerOpen {
			t.Errorf("%s: ok=%v attempts=%d reason=%s; want failed without a request, breaker_open", id, r.OK, r.Attempts, r.Reason)
		}
	}
	if want := "breakers opened during the run: " + host + " (open since "; !strings.Contains(stderr, want) {
		t.Errorf("summary lacks %q:\n%s", want, stderr)
	}
	_, stdout, _ := run("json", 1, "--json")
	if want := `"breakers_opened":[{"host":"` + host + `",`; !strings.Contains(stdout, want) || !strings.Contains(stdout, `"still_not_closed":true`) {
		t.Errorf("--json summary lacks %s...still_not_closed:\n%s", want, stdout)
	}
}

// waitStatus polls `enqueue status` until it lists host's breaker (a
// liveness wait: the worker shares its breaker states in the background).
func waitStatus(t *testing.T, natsURL, host string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, stdout, _ := runEnqueue(t, nil, "status", "--nats", natsURL)
		if strings.Contains(stdout, host) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("enqueue status never listed %s's breaker:\n%s", host, stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
