package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
)

// Results of id-less lines can be joined to their input: every result (and
// the callback body, the same record) names the request's method and URL,
// secrets redacted, and its FILE:LINE (in a JSON array, the line where the
// element starts); dead letters and `enqueue show` carry them too.
func TestResultsCarryMethodURLAndSource(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	var mu sync.Mutex
	var hookKeys []string
	var hookBodies []job.Result
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var res job.Result
		_ = json.Unmarshal(b, &res)
		mu.Lock()
		hookKeys, hookBodies = append(hookKeys, r.Header.Get("Idempotency-Key")), append(hookBodies, res)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	w := start(t, "worker", workerEnv(ns.ClientURL()))
	w.waitLine("consuming jobs")

	dir := t.TempDir()
	array := filepath.Join(dir, "array.json")
	lines := filepath.Join(dir, "lines.jsonl")
	writeFile(t, array, "[\n  {\"url\": \""+srv.URL+"/a?token=TOPSECRET\"},\n  {\n    \"method\": \"PUT\",\n    \"url\": \""+srv.URL+"/b\"\n  }\n]\n")
	writeFile(t, lines, `{"url":"`+srv.URL+`/c"}`+"\n"+`{"url":"`+srv.URL+`/c"}`+"\n"+
		`{"url":"`+srv.URL+`/d?status=404","callback":"`+hook.URL+`/hook"}`+"\n")
	out := filepath.Join(dir, "out.jsonl")
	code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", "join", "--wait", "--out", out, array, lines)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (one job failed): %s", code, stderr)
	}
	bySource := map[string]*job.Result{}
	for _, r := range readResults(t, out) {
		bySource[r.Source] = r
	}
	want := map[string]struct{ method, url string }{
		array + ":2": {"GET", srv.URL + "/a?token=REDACTED"},
		array + ":3": {"PUT", srv.URL + "/b"},
		lines + ":1": {"GET", srv.URL + "/c"},
		lines + ":2": {"GET", srv.URL + "/c"},
		lines + ":3": {"GET", srv.URL + "/d?status=404"},
	}
	for src, w := range want {
		if r := bySource[src]; r == nil || r.Method != w.method || r.URL != w.url {
			t.Errorf("%s: result %+v, want %s %s", src, r, w.method, w.url)
		}
	}
	if len(bySource) != len(want) || bySource[lines+":1"].ID == bySource[lines+":2"].ID {
		t.Errorf("%d results by source, want %d with distinct ids", len(bySource), len(want))
	}
	failed := bySource[lines+":3"]
	mu.Lock()
	if len(hookKeys) != 1 || hookKeys[0] != failed.ID+":callback" || hookBodies[0].Source != lines+":3" || hookBodies[0].URL != failed.URL {
		t.Errorf("callback: keys %q bodies %+v, want one POST with key %q and the result's source", hookKeys, hookBodies, failed.ID+":callback")
	}
	mu.Unlock()

	// A result is stored before its dead letter.
	waitUntil(t, func() bool { return streamMessages(t, ns.ClientURL(), queue.NewNames("jetpost").DLQStream()) == 1 })
	_, dlq, _ := runEnqueue(t, nil, "dlq", "join", "--json", "--nats", ns.ClientURL())
	var dl struct {
		Reason job.Reason `json:"reason"`
		Result job.Result `json:"result"`
	}
	if err := json.Unmarshal([]byte(dlq), &dl); err != nil || dl.Reason != job.ReasonPermanent || dl.Result.Source != lines+":3" || dl.Result.Method != "GET" {
		t.Errorf("dead letter (%v): %s", err, dlq)
	}
	code, table, stderr := runEnqueue(t, nil, "show", out)
	if code != 0 || !strings.Contains(table, lines+":3") || !strings.Contains(table, "PUT "+srv.URL+"/b") || strings.Contains(table, "TOPSECRET") {
		t.Errorf("show: exit %d %s\n%s", code, stderr, table)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
