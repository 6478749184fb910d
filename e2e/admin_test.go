package e2e

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
)

// The operator's view: status shows the batch, dlq lists its failure,
// redrive sends it again and it succeeds; status then shows no dead letter.
func TestStatusDLQRedriveCommands(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	w := start(t, "worker", workerEnv(ns.ClientURL(), "JETPOST_MAX_ATTEMPTS=1"))
	w.waitLine("consuming jobs")
	path := filepath.Join(t.TempDir(), "jobs.jsonl")
	// "later" fails its first request only: one attempt allowed, so it is
	// dead-lettered, and succeeds when re-driven.
	content := fmt.Sprintf("{\"id\":\"fine\",\"url\":\"%s/a\"}\n{\"id\":\"later\",\"url\":\"%s/b?fail_first=1\"}\n", srv.URL, srv.URL)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	nats := []string{"--nats", ns.ClientURL()}
	if code, _, stderr := runEnqueue(t, nil, append(nats, "--batch", "ops", "--wait", path)...); code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, stderr)
	}
	// A result is stored before its dead letter, and the job is acked after
	// both: status counts it open until then.
	names := queue.NewNames("jetpost")
	waitUntil(t, func() bool { return streamMessages(t, ns.ClientURL(), names.DLQStream()) == 1 })
	waitUntil(t, func() bool { return streamMessages(t, ns.ClientURL(), names.JobsStream()) == 0 })

	code, out, _ := runEnqueue(t, nil, append([]string{"status", "ops"}, nats...)...)
	if code != 0 || !strings.Contains(out, "ops") || !strings.Contains(out, "breakers: all closed") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	code, out, _ = runEnqueue(t, nil, append([]string{"status", "--json"}, nats...)...)
	var o queue.Overview
	if err := json.Unmarshal([]byte(out), &o); err != nil || code != 0 || len(o.Batches) != 1 ||
		o.Batches[0].Results != 2 || o.Batches[0].DeadLetters != 1 || o.Batches[0].Open != 0 {
		t.Errorf("status --json: exit %d, %v, %+v", code, err, o)
	}
	// The worker posts its limits per host; status shows them, with the
	// adaptive limit it holds for the target now. A post may have been
	// taken while the last request was out: wait for one after it.
	host := strings.TrimPrefix(srv.URL, "http://")
	var posted struct {
		HostLimits []fleetrate.WorkerLimits `json:"host_limits"`
	}
	waitUntil(t, func() bool {
		_, out, _ := runEnqueue(t, nil, append([]string{"status", "--json"}, nats...)...)
		posted.HostLimits = nil
		return json.Unmarshal([]byte(out), &posted) == nil && len(posted.HostLimits) == 1 &&
			len(posted.HostLimits[0].Hosts) == 1 && posted.HostLimits[0].Hosts[0].Admitted >= 2 &&
			posted.HostLimits[0].Hosts[0].InFlight == 0
	})
	if h := posted.HostLimits[0].Hosts[0]; h.Host != host || !h.Adaptive || h.Limit < 1 {
		t.Errorf("host limits posted: %+v, want %s, adaptive, nothing in flight", h, host)
	}
	code, out, _ = runEnqueue(t, nil, append([]string{"status"}, nats...)...)
	if code != 0 || !strings.Contains(out, "host limits (1 workers)") || !strings.Contains(out, host) || !strings.Contains(out, "adaptive") {
		t.Errorf("status does not show the host's limit: exit %d\n%s", code, out)
	}
	code, out, _ = runEnqueue(t, nil, append([]string{"dlq", "ops"}, nats...)...)
	if code != 0 || !strings.Contains(out, "later") || strings.Contains(out, "fine") || !strings.Contains(out, "exhausted") {
		t.Errorf("dlq: exit %d\n%s", code, out)
	}
	code, out, _ = runEnqueue(t, nil, append([]string{"redrive", "ops"}, nats...)...)
	if code != 0 || !strings.Contains(out, "1 jobs re-driven") {
		t.Errorf("redrive: exit %d\n%s", code, out)
	}
	waitUntil(t, func() bool {
		_, out, _ := runEnqueue(t, nil, append([]string{"status", "ops", "--json"}, nats...)...)
		var o queue.Overview
		return json.Unmarshal([]byte(out), &o) == nil && len(o.Batches) == 1 &&
			o.Batches[0].Results == 3 && o.Batches[0].DeadLetters == 0
	})
	if k := tg.Key("later"); fmt.Sprint(k.Statuses) != "[503 200]" {
		t.Errorf("target saw %v for the re-driven job", k.Statuses)
	}
	code, _, stderr := runEnqueue(t, nil, append([]string{"redrive"}, nats...)...)
	if code != 2 {
		t.Errorf("redrive without a batch: exit %d, %s", code, stderr)
	}
}
