package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
)

// enqueue status shows every stream's and bucket's replication and warns,
// naming the command to run, about any below JETPOST_REPLICAS; --json
// carries the same.
func TestStatusShowsReplicationAndWarnsBelowReplicas(t *testing.T) {
	setEnv(t)
	ns := natstest.RunServer(t)
	_, js := connectJS(t, ns)
	if err := queue.Setup(context.Background(), js, testNames, testStreams); err != nil {
		t.Fatal(err)
	}

	t.Setenv("JETPOST_REPLICAS", "1")
	r := runCmd(t, nil, "status", "--nats", ns.ClientURL())
	if r.err != nil || strings.Contains(r.stderr, "warning") {
		t.Fatalf("status with every store at JETPOST_REPLICAS: %v\nstderr: %s", r.err, r.stderr)
	}
	for _, want := range []string{"replication (JETPOST_REPLICAS=1)", "JETPOST_JOBS", "KV_JETPOST_DONE", "KV_JETPOST_BREAKERS"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}

	t.Setenv("JETPOST_REPLICAS", "3")
	r = runCmd(t, nil, "status", "--nats", ns.ClientURL())
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, want := range []string{
		"warning: stream JETPOST_JOBS has 1 replicas, JETPOST_REPLICAS=3",
		"nats stream edit KV_JETPOST_DONE --replicas 3",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "BREAKERS has") {
		t.Errorf("a bucket not created yet is not below JETPOST_REPLICAS:\n%s", r.stderr)
	}

	r = runCmd(t, nil, "status", "--json", "--nats", ns.ClientURL())
	var o queue.Overview
	if err := json.Unmarshal([]byte(r.stdout), &o); err != nil {
		t.Fatalf("%v in %s", err, r.stdout)
	}
	got := map[string]queue.StoreReplication{}
	for _, s := range o.Replication {
		got[s.Stream] = s
	}
	if len(got) != len(testNames.Stores()) {
		t.Errorf("%d stores in --json, want %d: %+v", len(got), len(testNames.Stores()), o.Replication)
	}
	if j := got["JETPOST_JOBS"]; j.Replicas != 1 || j.Want != 3 || !j.Essential || j.Leader == "" {
		t.Errorf("JETPOST_JOBS in --json: %+v", j)
	}
	if b := got["KV_JETPOST_BREAKERS"]; !b.Missing {
		t.Errorf("KV_JETPOST_BREAKERS in --json: %+v, want missing", b)
	}
	if len(o.Warnings) != 5 { // the three streams, the done and the batches bucket
		t.Errorf("warnings %q, want one per store below JETPOST_REPLICAS (5)", o.Warnings)
	}
}
