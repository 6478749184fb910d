package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/pkg/job"
)

// echoServer answers each request with its method, path and body, and
// counts requests by "METHOD /path".
func echoServer(t *testing.T) (url string, count func(string) int) {
	t.Helper()
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen[r.Method+" "+r.URL.Path]++
		mu.Unlock()
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func(what string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[what]
	}
}

// Issue 14 point 1 with the real binaries: team A's {"id":"1"} and team
// B's {"id":"1"} with another request, both queued within the dedup window,
// are two jobs; B's result is B's, on B's subject; each file enqueued again
// sends nothing and gets its own result back. Point 6: an id-less line's
// derived id does not depend on its API key, and a rotated key sends
// nothing again.
func TestJobIdentityAcrossBatches(t *testing.T) {
	ns := natstest.RunServer(t)
	url, count := echoServer(t)
	dir := t.TempDir()
	env := []string{"JETPOST_REDACT_HEADERS=X-Api-Key"}
	fileA, fileB := filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl")
	writeFile(t, fileA, `{"id":"1","url":"`+url+`/a"}`+"\n")
	writeFile(t, fileB, `{"id":"1","method":"POST","url":"`+url+`/b","data":"team B"}`+"\n")

	// Both queued before any worker runs: the jobs stream's dedup window
	// holds A's id when B's job comes.
	if code, _, stderr := runEnqueue(t, env, "--nats", ns.ClientURL(), "--batch", "teamA", fileA); code != 0 {
		t.Fatalf("team A: exit %d: %s", code, stderr)
	}
	outB := filepath.Join(dir, "b.out")
	b := start(t, "enqueue", env, "--nats", ns.ClientURL(), "--batch", "teamB", "--wait", "--out", outB, fileB)
	if line := waitMatch(b, publishedLine); !strings.HasPrefix(line, "batch teamB: 1 published") || strings.Contains(line, "already enqueued") {
		t.Fatalf("team B's job was not published as a job of its own: %s", line)
	}
	start(t, "worker", workerEnv(ns.ClientURL(), env...)) // stopped at cleanup
	if code := b.wait(); code != 0 {
		t.Fatalf("team B: exit %d: %s", code, b.output())
	}
	wantResult(t, readResults(t, outB)["1"], "teamB", "POST /b team B")
	// B's result is the one stored on B's subject.
	code, stored, stderr := runEnqueue(t, env, "results", "teamB", "--nats", ns.ClientURL())
	if code != 0 || !strings.Contains(stored, `"body":"POST /b team B"`) || strings.Contains(stored, "GET /a") {
		t.Errorf("enqueue results teamB: exit %d %s\n%s", code, stderr, stored)
	}

	// Each file again: nothing sent, its own result returned. A job's
	// completion marker is stored after its result, before its ack: once
	// no job is left, both markers are there to be found.
	waitUntil(t, func() bool { return streamMessages(t, ns.ClientURL(), "JETPOST_JOBS") == 0 })
	for _, c := range []struct{ file, batch, body string }{{fileA, "teamA", "GET /a "}, {fileB, "teamB", "POST /b team B"}} {
		out := filepath.Join(dir, c.batch+".again")
		code, _, stderr := runEnqueue(t, env, "--nats", ns.ClientURL(), "--wait", "--out", out, c.file)
		if code != 0 || !strings.Contains(stderr, "1 completed by an earlier run and not sent again") {
			t.Errorf("%s again: exit %d: %s", c.file, code, stderr)
		}
		wantResult(t, readResults(t, out)["1"], c.batch, c.body)
	}
	if count("GET /a") != 1 || count("POST /b") != 1 {
		t.Errorf("target saw GET /a %d times, POST /b %d times; want once each", count("GET /a"), count("POST /b"))
	}

	// An id-less line with an API key, then with the key rotated.
	var ids []string
	for _, key := range []string{"0042", "0043"} {
		file, out := filepath.Join(dir, "k"+key+".jsonl"), filepath.Join(dir, "k"+key+".out")
		writeFile(t, file, `{"url":"`+url+`/k","headers":{"X-Api-Key":"`+key+`"}}`+"\n")
		if code, _, stderr := runEnqueue(t, env, "--nats", ns.ClientURL(), "--wait", "--out", out, file); code != 0 {
			t.Fatalf("key %s: exit %d: %s", key, code, stderr)
		}
		for id := range readResults(t, out) {
			ids = append(ids, id)
		}
	}
	if len(ids) != 2 || ids[0] != ids[1] || count("GET /k") != 1 {
		t.Errorf("derived ids %v, GET /k sent %d times; want one id, one request", ids, count("GET /k"))
	}
}

// publishedLine is enqueue's report of what publishing did.
var publishedLine = regexp.MustCompile(`batch \S+: \d+ published.*`)

// waitMatch blocks until p's output matches re and returns the match.
func waitMatch(p *proc, re *regexp.Regexp) string {
	p.t.Helper()
	timeout := time.After(2 * time.Minute) // bounds a broken test only
	for {
		if m := re.FindString(p.output()); m != "" {
			return m
		}
		select {
		case <-p.seen:
		case <-p.done:
			if m := re.FindString(p.output()); m != "" {
				return m
			}
			p.t.Fatalf("process exited before printing a line matching %s:\n%s", re, p.output())
		case <-timeout:
			p.t.Fatalf("no line matching %s within 2 minutes", re)
		}
	}
}

func wantResult(t *testing.T, r *job.Result, batch, body string) {
	t.Helper()
	if r == nil || r.Batch != batch || !r.OK || !strings.HasPrefix(r.Body, body) {
		t.Errorf("result %+v; want ok, batch %s, body %q", r, batch, body)
	}
}

// With JETPOST_IDENTITY_KEY set, credentials are part of a job's identity:
// team B's {"id":"1"} with the very request team A sent, but B's own
// token, is another job — sent with B's token, answered to B — never A's
// result handed to B. The same file again still sends nothing.
func TestIdentityKeyKeepsCredentialsApart(t *testing.T) {
	ns := natstest.RunServer(t)
	var mu sync.Mutex
	sent := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent++
		mu.Unlock()
		fmt.Fprintf(w, "orders of %s", r.Header.Get("Authorization"))
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	env := []string{"JETPOST_IDENTITY_KEY=0123456789abcdef0123456789abcdef"}
	files := map[string]string{}
	for _, team := range []string{"A", "B"} {
		files[team] = filepath.Join(dir, team+".jsonl")
		writeFile(t, files[team], `{"id":"1","url":"`+srv.URL+`/me/orders","headers":{"Authorization":"Bearer token-`+team+`"}}`+"\n")
	}
	// Both queued before any worker runs, so the dedup window holds A's
	// job when B's comes.
	if code, _, stderr := runEnqueue(t, env, "--nats", ns.ClientURL(), "--batch", "teamA", files["A"]); code != 0 {
		t.Fatalf("team A: exit %d: %s", code, stderr)
	}
	outB := filepath.Join(dir, "b.out")
	b := start(t, "enqueue", env, "--nats", ns.ClientURL(), "--batch", "teamB", "--wait", "--out", outB, files["B"])
	if line := waitMatch(b, publishedLine); !strings.HasPrefix(line, "batch teamB: 1 published") {
		t.Fatalf("team B's job was not published as a job of its own: %s", line)
	}
	start(t, "worker", workerEnv(ns.ClientURL(), env...))
	if code := b.wait(); code != 0 {
		t.Fatalf("team B: exit %d: %s", code, b.output())
	}
	wantResult(t, readResults(t, outB)["1"], "teamB", "orders of Bearer token-B")

	// A's completion marker is stored after its result, before its ack.
	waitUntil(t, func() bool { return streamMessages(t, ns.ClientURL(), "JETPOST_JOBS") == 0 })
	outA := filepath.Join(dir, "a.again")
	code, _, stderr := runEnqueue(t, env, "--nats", ns.ClientURL(), "--wait", "--out", outA, files["A"])
	if code != 0 || !strings.Contains(stderr, "1 completed by an earlier run and not sent again") {
		t.Errorf("team A's file again: exit %d: %s", code, stderr)
	}
	wantResult(t, readResults(t, outA)["1"], "teamA", "orders of Bearer token-A")
	mu.Lock()
	defer mu.Unlock()
	if sent != 2 {
		t.Errorf("target answered %d requests; want 2 (one per team)", sent)
	}
}
