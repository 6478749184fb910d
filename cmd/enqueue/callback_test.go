package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
)

// hookTarget is a callback receiver that records every POST (its
// idempotency key and the result it carried) and answers with status.
type hookTarget struct {
	status atomic.Int32
	mu     sync.Mutex
	keys   []string
	bodies []job.Result
}

func (h *hookTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var res job.Result
	_ = json.Unmarshal(b, &res)
	h.mu.Lock()
	h.keys = append(h.keys, r.Header.Get("Idempotency-Key"))
	h.bodies = append(h.bodies, res)
	h.mu.Unlock()
	w.WriteHeader(int(h.status.Load()))
}

func (h *hookTarget) calls() ([]string, []job.Result) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.keys...), append([]job.Result(nil), h.bodies...)
}

// Every result names its request and input line; a callback carries a key
// of its own; a callback that finally fails leaves the job's result ok, is
// listed by dlq as callback_failed, and a redrive POSTs it again (failing
// again: a new dead letter; then delivered: none), sending nothing else and
// storing no second result.
func TestCallbackDeadLetterAndRedrive(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	hook := &hookTarget{}
	hook.status.Store(http.StatusServiceUnavailable)
	cb := httptest.NewServer(hook)
	defer cb.Close()
	startWorkers(t, ns, 1) // 3 attempts per callback round
	url := ns.ClientURL()
	file := write(t, "jobs.jsonl", `{"url":"`+srv.URL+`/ok?api_key=k-SECRET","callback":"`+cb.URL+`/hook"}`+"\n"+
		`{"id":"plain","method":"POST","url":"`+srv.URL+`/b","data":"x"}`+"\n")
	out := filepath.Join(t.TempDir(), "out.jsonl")

	if r := runCmd(t, nil, "--nats", url, "--batch", "cbk", "--wait", "--quiet", "--out", out, file); r.code() != 0 {
		t.Fatalf("exit %d (%v): the jobs succeeded, a callback failing does not fail them\n%s", r.code(), r.err, r.stderr)
	}
	results := readOut(t, out)
	hooked, plain := results[file+":1"], results[file+":2"]
	if hooked == nil || plain == nil {
		t.Fatalf("results not joinable to their lines by source: %v", results)
	}
	if plain.ID != "plain" || plain.Method != "POST" || plain.URL != srv.URL+"/b" {
		t.Errorf("plain: %+v", plain)
	}
	if hooked.Method != "GET" || hooked.URL != srv.URL+"/ok?api_key=REDACTED" || !hooked.OK {
		t.Errorf("hooked: method %q url %q ok %v", hooked.Method, hooked.URL, hooked.OK)
	}
	if c := hooked.Callback; c == nil || c.OK || c.Status != 503 || c.Attempts != 3 {
		t.Errorf("hooked callback %+v, want 3 failed POSTs", c)
	}
	wantKey := hooked.ID + ":callback"
	keys, bodies := hook.calls()
	if len(keys) != 3 || bodies[0].Source != file+":1" || bodies[0].URL != hooked.URL {
		t.Errorf("callback POSTs %d, first body %+v", len(keys), bodies[0])
	}

	// A result is stored before its dead letter.
	waitUntil(t, func() bool { return streamMsgs(t, ns, testNames.DLQStream()) == 1 })
	first := deadLetters(t, ns, "cbk")[0]
	if first.Reason != job.ReasonCallbackFailed || first.Result.ID != hooked.ID || !first.Result.OK {
		t.Errorf("dead letter %+v", first)
	}
	r := runCmd(t, nil, "dlq", "cbk", "--nats", url)
	if !strings.Contains(r.stdout, "callback_failed") || !strings.Contains(r.stdout, "jobs.jsonl:1") || strings.Contains(r.stdout, "plain") {
		t.Errorf("dlq table:\n%s", r.stdout)
	}

	// Re-driven while the receiver still fails: a new dead letter.
	r = runCmd(t, nil, "redrive", "cbk", "--nats", url)
	if r.code() != 0 || !strings.Contains(r.stdout, "0 jobs re-driven, 0 skipped, 1 callbacks re-sent") {
		t.Fatalf("redrive: exit %d\n%s%s", r.code(), r.stdout, r.stderr)
	}
	waitUntil(t, func() bool {
		dls := deadLetters(t, ns, "cbk")
		return len(dls) == 1 && dls[0].Seq != first.Seq
	})
	if dl := deadLetters(t, ns, "cbk")[0]; dl.Reason != job.ReasonCallbackFailed || dl.Result.Callback == nil || dl.Result.Callback.Attempts != 3 {
		t.Errorf("second dead letter %+v %+v", dl, dl.Result.Callback)
	}

	// Re-driven once the receiver works: delivered, nothing left.
	hook.status.Store(http.StatusNoContent)
	if r = runCmd(t, nil, "redrive", "cbk", "--nats", url); !strings.Contains(r.stdout, "1 callbacks re-sent") {
		t.Fatalf("second redrive:\n%s%s", r.stdout, r.stderr)
	}
	waitUntil(t, func() bool {
		keys, _ := hook.calls()
		return len(keys) == 7 && streamMsgs(t, ns, testNames.JobsStream()) == 0 && streamMsgs(t, ns, testNames.DLQStream()) == 0
	})
	keys, bodies = hook.calls()
	for i, k := range keys {
		if k != wantKey {
			t.Errorf("POST %d: Idempotency-Key %q, want %q (its own, not the job's %q)", i+1, k, wantKey, hooked.ID)
		}
	}
	if last := bodies[6]; last.ID != hooked.ID || !last.OK || last.Callback != nil || last.Source != file+":1" {
		t.Errorf("re-sent body %+v: want the stored result as first sent", last)
	}
	if n := tg.Stats().Requests; n != 2 {
		t.Errorf("the jobs' target saw %d requests, want 2: a callback re-drive sends the POST alone", n)
	}
	nc, js := connectJS(t, ns)
	defer nc.Close()
	n, err := queue.ReadResults(context.Background(), js, testNames, "cbk", func(uint64, []byte) error { return nil })
	if err != nil || n != 2 {
		t.Errorf("%d results stored (%v), want one per job", n, err)
	}
}

// readOut reads a --out file, indexed by source.
func readOut(t *testing.T, path string) map[string]*job.Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*job.Result{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		r, err := job.DecodeResult([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		out[r.Source] = r
	}
	return out
}

func deadLetters(t *testing.T, ns *server.Server, batch string) []queue.StoredDeadLetter {
	t.Helper()
	nc, js := connectJS(t, ns)
	defer nc.Close()
	var dls []queue.StoredDeadLetter
	if err := queue.DeadLetters(context.Background(), js, testNames, batch, func(dl queue.StoredDeadLetter) error {
		dls = append(dls, dl)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return dls
}

// waitUntil polls; the bound only ends a broken test.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 90s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
