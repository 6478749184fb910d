package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
)

// The console user of examples/nats-permissions.conf: a worker that runs
// as the worker user and serves the console as the console user shows
// the batches, hosts and dead letters, and pauses, resumes, re-drives and
// cancels a batch, all without one permission violation.
func TestConsoleNATSPermissions(t *testing.T) {
	for _, role := range []string{"WORKER", "PRODUCER", "RESULTS", "ADMIN", "CONSOLE"} {
		t.Setenv("JETPOST_"+role+"_PASSWORD", strings.ToLower(role)+"-pw")
	}
	opts, err := server.ProcessConfigFile("../examples/nats-permissions.conf")
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.RunServerWith(t, opts)
	var denied violations
	ns.SetLoggerV2(&denied, false, false, false)
	url := ns.ClientURL()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/bad") {
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	const token = "permissions-console-token"
	w := start(t, "worker", workerEnv(url, append(roleEnv("worker"), "JETPOST_HTTP_ADDR=127.0.0.1:0", "JETPOST_CONSOLE_TOKEN="+token,
		"JETPOST_CONSOLE_NATS_USER=console", "JETPOST_CONSOLE_NATS_PASSWORD=console-pw")...))
	w.waitLine("consuming jobs")
	base := "http://" + opsAddr(t, w)

	file := filepath.Join(t.TempDir(), "jobs.jsonl")
	var b strings.Builder
	for i := range 5 {
		path := "/ok"
		if i < 2 {
			path = "/bad"
		}
		fmt.Fprintf(&b, `{"id":"j%d","url":"%s%s/%d"}`+"\n", i, srv.URL, path, i)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runEnqueue(t, roleEnv("producer"), "--nats", url, "--batch", "cp", file); code != 0 {
		t.Fatalf("producer: exit %d: %s", code, stderr)
	}
	waitResults(t, url, "cp", 5)

	call := func(method, path string) string {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s\nviolations:\n%s", method, path, resp.StatusCode, body, denied.all())
		}
		return string(body)
	}
	var dls struct {
		DeadLetters []json.RawMessage `json:"dead_letters"`
	}
	// A failed job's dead letter is stored after its result: both may
	// take a moment more than the results did.
	waitUntil(t, func() bool {
		if err := json.Unmarshal([]byte(call("GET", "/api/deadletters/cp")), &dls); err != nil {
			t.Fatalf("dead letters: %v", err)
		}
		return len(dls.DeadLetters) == 2
	})
	for _, step := range []string{"pause", "resume", "redrive", "cancel"} {
		answer := call("POST", "/api/batches/cp/"+step)
		if step != "redrive" {
			continue
		}
		// The re-drive must have published both jobs again and deleted
		// their dead letters: the rights this role exists for.
		var rep queue.RedriveReport
		if err := json.Unmarshal([]byte(answer), &rep); err != nil || rep.Redriven != 2 {
			t.Errorf("redrive answered %s (%v), want 2 jobs re-driven", answer, err)
		}
	}
	var snap struct {
		Batches  []struct{ Batch, State string }
		Hosts    []json.RawMessage
		Warnings []string
	}
	if err := json.Unmarshal([]byte(call("GET", "/api/snapshot")), &snap); err != nil {
		t.Fatal(err)
	}
	if len(snap.Warnings) > 0 || len(snap.Batches) != 1 || snap.Batches[0].State != "cancelled" {
		t.Errorf("snapshot after the actions: %+v", snap)
	}
	if v := denied.all(); v != "" {
		t.Fatalf("permission violations while the console did its job:\n%s", v)
	}
}
