package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/schemas"
)

// nodeExample is the directory of the Node.js example, or a skip when
// node or its installed packages (npm ci --prefix examples/node) are
// missing.
func nodeExample(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the Node.js example (examples/node) is not exercised")
	}
	dir, err = filepath.Abs("../examples/node")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@nats-io", "jetstream")); err != nil {
		t.Skip("examples/node has no node_modules: run `npm ci --prefix examples/node` to exercise the Node.js example")
	}
	return node, dir
}

// runNode runs a script of the example to completion and returns its
// standard output.
func runNode(t *testing.T, node, dir string, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // liveness guard
	defer cancel()
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// The Node.js example against a real server and worker process: its
// producer publishes a file's jobs (a lower-case method, one without an
// id), its consumer prints one result per job, each matching the result
// schema; publishing again sends and stores nothing new (Nats-Msg-Id,
// and the completion marker for the job without an id).
func TestNodeExample(t *testing.T) {
	node, dir := nodeExample(t)
	ns := natstest.RunServer(t)
	url, count := echoServer(t)
	w := start(t, "worker", workerEnv(ns.ClientURL()))
	w.waitLine("consuming jobs")
	file := filepath.Join(t.TempDir(), "jobs.jsonl")
	example, err := os.ReadFile(filepath.Join(dir, "jobs.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, strings.ReplaceAll(string(example), "http://127.0.0.1:8088", url))
	env := []string{"NATS_URL=" + ns.ClientURL()}
	runNode(t, node, dir, env, "produce.mjs", "from-node", file)
	out := runNode(t, node, dir, env, "consume.mjs", "from-node", "3")
	ids := map[string]bool{}
	var results []job.Result
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		checkSchema(t, schemas.Result, []byte(line), fmt.Sprintf("consume.mjs line %d", i+1))
		var r job.Result
		if err := json.Unmarshal([]byte(line), &r); err != nil || !r.OK || r.Batch != "from-node" {
			t.Errorf("result %s: %v", line, err)
		}
		ids[r.ID] = true
		results = append(results, r)
	}
	if len(ids) != 3 || !ids["node-1"] || !ids["node-2"] {
		t.Errorf("results for %v, want node-1, node-2 and a derived id", ids)
	}
	for _, r := range results {
		if r.ID == "node-2" && r.Body != `POST /orders {"sku":"A-100","qty":2}` {
			t.Errorf("node-2 sent %q", r.Body)
		}
	}
	if count("GET /orders/17") != 1 || count("POST /orders") != 1 || count("GET /inventory") != 1 {
		t.Errorf("target saw %d, %d, %d requests; want one each", count("GET /orders/17"), count("POST /orders"), count("GET /inventory"))
	}
	_, js := connect(t, ns.ClientURL())
	drained(t, js, 3)
	runNode(t, node, dir, env, "produce.mjs", "from-node", file)
	drained(t, js, 3)
	if all := runNode(t, node, dir, env, "consume.mjs", "from-node"); strings.Count(all, "\n") != 3 {
		t.Errorf("after publishing again, stored results:\n%s\nwant 3", all)
	}
	if none := runNode(t, node, dir, env, "consume.mjs", "no-such-batch"); none != "" {
		t.Errorf("results of a batch with none: %q", none)
	}
	// The id-less job had no Nats-Msg-Id: its completion marker caught it.
	if count("GET /orders/17") != 1 || count("GET /inventory") != 1 {
		t.Errorf("published again: target saw GET /orders/17 %d, GET /inventory %d times; want 1 each", count("GET /orders/17"), count("GET /inventory"))
	}
}
