package main

import (
	"encoding/json"
	"flag"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
)

// Options that cannot go together are a usage error before anything
// connects.
func TestOptionsThatNeedWait(t *testing.T) {
	setEnv(t)
	file := write(t, "jobs.jsonl", jobLines(1, "https://api.example.com/a", "x"))
	for _, args := range [][]string{
		{"--json", file},
		{"--out", "results.jsonl", file},
		{"--wait", "--json", "--out", "-", file},
	} {
		r := runCmd(t, nil, append([]string{"--nats", "nats://127.0.0.1:1"}, args...)...)
		if r.code() != exitUsage || r.err == nil || !strings.Contains(r.err.Error(), "--") || r.stdout != "" {
			t.Errorf("%v: exit %d (%v), stdout %q; want a usage error", args, r.code(), r.err, r.stdout)
		}
	}
}

func TestVersion(t *testing.T) {
	r := runCmd(t, nil, "--version")
	if r.code() != 0 || !strings.HasPrefix(r.stdout, "enqueue ") || !strings.Contains(r.stdout, runtime.Version()) || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("enqueue --version: exit %d, %q", r.code(), r.stdout)
	}
}

func TestParseInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	wait := fs.Bool("wait", false, "")
	nats := fs.String("nats", "", "")
	pos, err := parseInterspersed(fs, []string{"a.jsonl", "--wait", "-", "--nats", "u", "--", "--b.jsonl", "-x"})
	if err != nil || !*wait || *nats != "u" || !slices.Equal(pos, []string{"a.jsonl", "-", "--b.jsonl", "-x"}) {
		t.Errorf("positional %q, wait %v, nats %q, err %v", pos, *wait, *nats, err)
	}
}

// Flags go anywhere: before the subcommand (`enqueue --nats URL status`
// used to open a file named status), after it, and after the files. A
// batch nothing is stored for is unknown (exit 4); one with only open
// jobs is known.
func TestFlagsAnywhereAndUnknownBatches(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	t.Setenv("JETPOST_MAX_INFLIGHT", "8") // the worker's: no warning
	t.Setenv(config.Prefix+"_MAXINFLIGHT", "8")
	ns := natstest.RunServer(t)
	url := ns.ClientURL()
	file := write(t, "jobs.jsonl", jobLines(3, "https://api.example.com/a", "k"))

	r := runCmd(t, nil, file, "--batch", "known", "--nats", url)
	if r.code() != 0 || r.stdout != "known\n" {
		t.Fatalf("flags after the file: exit %d (%v), stdout %q\n%s", r.code(), r.err, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "enqueue: warning: "+config.Prefix+"_MAXINFLIGHT is not a jetpost variable and is ignored (did you mean JETPOST_MAX_INFLIGHT?)") ||
		strings.Count(r.stderr, "warning:") != 1 {
		t.Errorf("want one warning, about the misspelt variable:\n%s", r.stderr)
	}
	r = runCmd(t, nil, "--nats", url, "status", "known")
	if r.code() != 0 || !strings.Contains(r.stdout, "known") {
		t.Fatalf("enqueue --nats URL status: exit %d (%v)\n%s%s", r.code(), r.err, r.stdout, r.stderr)
	}
	r = runCmd(t, nil, "--json", "--nats", url, "status")
	var overview struct {
		Batches []struct {
			Batch string `json:"batch"`
			Open  int    `json:"open"`
		} `json:"batches"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &overview); r.code() != 0 || err != nil || len(overview.Batches) != 1 || overview.Batches[0].Open != 3 {
		t.Errorf("status --json: exit %d, %v: %s", r.code(), err, r.stdout)
	}
	for _, args := range [][]string{{"status", "known"}, {"results", "known"}, {"dlq", "known"}, {"redrive", "known"}} {
		if r := runCmd(t, nil, append([]string{"--nats", url}, args...)...); r.code() != 0 {
			t.Errorf("%v: exit %d (%v)\n%s", args, r.code(), r.err, r.stderr)
		}
	}
	for _, args := range [][]string{{"status", "nope"}, {"results", "nope"}, {"dlq", "nope"}, {"redrive", "nope"}} {
		r := runCmd(t, nil, append(args, "--nats", url)...)
		if r.code() != exitUnknownBatch || !strings.Contains(r.err.Error(), "unknown batch nope") || r.stdout != "" {
			t.Errorf("%v: exit %d (%v), stdout %q; want %d, unknown batch", args, r.code(), r.err, r.stdout, exitUnknownBatch)
		}
	}
}

// --quiet: nothing on stderr when all went well; the summary (the error)
// when jobs failed. Standard output keeps the batch id.
func TestQuiet(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	ns := natstest.RunServer(t)
	srv := httptest.NewServer(target.New(target.Options{}))
	defer srv.Close()
	startWorkers(t, ns, 1)
	url := ns.ClientURL()
	ok := write(t, "ok.jsonl", jobLines(5, srv.URL+"/ok", "q"))
	r := runCmd(t, nil, "--nats", url, "--batch", "quiet", "--wait", "--quiet", ok)
	if r.code() != 0 || r.stderr != "" || r.stdout != "quiet\n" {
		t.Errorf("--quiet: exit %d (%v), stdout %q, stderr %q", r.code(), r.err, r.stdout, r.stderr)
	}
	// With --out -, stdout is JSON Lines of results only.
	fresh := write(t, "fresh.jsonl", jobLines(5, srv.URL+"/ok", "o"))
	r = runCmd(t, nil, "--nats", url, "--batch", "quiet-out", "--wait", "--quiet", "--out", "-", fresh)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code() != 0 || r.stderr != "" || len(lines) != 5 {
		t.Errorf("--out -: exit %d (%v), stdout %q, stderr %q", r.code(), r.err, r.stdout, r.stderr)
	}
	for _, l := range lines {
		if res, err := job.DecodeResult([]byte(l)); err != nil || res.Batch != "quiet-out" {
			t.Errorf("--out - line %q: %v", l, err)
		}
	}
	failing := write(t, "fail.jsonl", `{"id":"nf","url":"`+srv.URL+`/x?status=404"}`+"\n")
	r = runCmd(t, nil, "--nats", url, "--batch", "quiet-fail", "--wait", "--quiet", failing)
	if r.code() != exitFailedJobs || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "batch quiet-fail: 1 results: 0 ok, 1 failed") {
		t.Errorf("--quiet with a failed job: exit %d (%v), stderr %q", r.code(), r.err, r.stderr)
	}
}

// `enqueue show` on what is not a results file says what it is instead of
// printing a table of job descriptions.
func TestShowRefusesOtherFiles(t *testing.T) {
	cases := map[string]string{
		"jobs.jsonl":   jobLines(3, "https://api.example.com/a", "j"),
		"jobs.csv":     "id,url\na,https://api.example.com/a\n",
		"array.json":   `[{"id":"a","url":"https://api.example.com/a"}]`,
		"other.jsonl":  `{"name":"x"}` + "\n",
		"result.jsonl": `{"id":"a","batch":"b","ok":true,"status":200,"attempts":1}` + "\n" + `{"id":"b","url":"https://x"}` + "\n",
	}
	want := map[string]string{
		"jobs.jsonl": "line 1 is a job", "jobs.csv": "line 1 is not a JSON object", "array.json": "line 1 is a JSON array",
		"other.jsonl": "line 1 is not a result record", "result.jsonl": "line 2 is a job",
	}
	for name, content := range cases {
		path := write(t, name, content)
		r := runCmd(t, nil, "show", path)
		if r.code() != exitUsage || r.stdout != "" || !strings.Contains(r.err.Error(), path+" is not a results file: "+want[name]) {
			t.Errorf("show %s: exit %d, stdout %q, err %v", name, r.code(), r.stdout, r.err)
		}
	}
}
