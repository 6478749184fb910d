package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
)

// Issue 14, points 2 and 3: a reply_to aimed at another batch's results or
// dead letters, at the jobs subject, at KV buckets, at the JetStream API or
// at reply inboxes, and a timeout above the ceiling (either form) are
// refused as FILE:LINE before anything is published; a reply_to under
// JETPOST_REPLY_PREFIXES is not.
func TestRunRefusesWhatTheDeploymentForbids(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	t.Setenv("JETPOST_REPLY_PREFIXES", "replies")
	t.Setenv("JETPOST_MAX_TIMEOUT", "2m")
	ns := natstest.RunServer(t)
	refused := []string{
		`"reply_to":"jetpost.results.teamB"`,
		`"reply_to":"jetpost.dlq.teamB"`,
		`"reply_to":"jetpost.jobs.teamB"`,
		`"reply_to":"$KV.JETPOST_ATTEMPTS.x"`,
		`"reply_to":"$JS.API.STREAM.PURGE.JETPOST_JOBS"`,
		`"reply_to":"_INBOX.abc"`,
		`"reply_to":"elsewhere.x"`,
		`"timeout":"1000000h"`,
		`"timeout":"3m"`,
		`"timeout":121`,
	}
	var file strings.Builder
	for i, field := range refused {
		fmt.Fprintf(&file, `{"id":"r%d","url":"https://api.example.com/x",%s}`+"\n", i, field)
	}
	file.WriteString(`{"id":"ok1","url":"https://api.example.com/x","reply_to":"replies.teamA","timeout":"2m"}` + "\n")
	path := write(t, "jobs.jsonl", file.String())

	r := runCmd(t, nil, "--nats", ns.ClientURL(), "--batch", "teamA", path)
	if r.code() != exitUsage {
		t.Fatalf("exit %d, want %d:\n%s", r.code(), exitUsage, r.stderr)
	}
	for i := range refused {
		if !strings.Contains(r.stderr, fmt.Sprintf("%s:%d: ", path, i+1)) {
			t.Errorf("line %d (%s) not reported:\n%s", i+1, refused[i], r.stderr)
		}
	}
	if strings.Contains(r.stderr, fmt.Sprintf("%s:%d: ", path, len(refused)+1)) {
		t.Errorf("the allowed line was reported:\n%s", r.stderr)
	}
	if n := streamMsgs(t, ns, testNames.JobsStream()); n != 0 {
		t.Fatalf("%d jobs published from refused input", n)
	}
	r = runCmd(t, nil, "--nats", ns.ClientURL(), "--batch", "teamA", "--skip-invalid", path)
	if r.code() != 0 || !strings.Contains(r.stderr, "batch teamA: 1 published") {
		t.Fatalf("exit %d (%v):\n%s", r.code(), r.err, r.stderr)
	}
}
