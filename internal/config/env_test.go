package config

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// A bare number is seconds, as a job file's "timeout" is.
func TestDurationsReadAsInJobFiles(t *testing.T) {
	cases := map[string]time.Duration{"30": 30 * time.Second, "1.5": 1500 * time.Millisecond, "30s": 30 * time.Second, "1m30s": 90 * time.Second, " 2h ": 2 * time.Hour, "0": 0}
	for in, want := range cases {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	setenv(t, "JETPOST_REQUEST_TIMEOUT", "30", "JETPOST_ACK_WAIT", "45", "JETPOST_RESULTS_MAX_AGE", "3600")
	c, err := LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	if c.RequestTimeout != 30*time.Second || c.AckWait != 45*time.Second || c.ResultsMaxAge != time.Hour {
		t.Errorf("request timeout %s, ack wait %s, results max age %s; want 30s, 45s, 1h", c.RequestTimeout, c.AckWait, c.ResultsMaxAge)
	}
}

// Each bad value is one message naming the variable and the value, with
// no formatting debris (envconfig's %!w(<nil>)).
func TestBadValuesReadCleanly(t *testing.T) {
	cases := [][3]string{
		{"JETPOST_REQUEST_TIMEOUT", "soon", `JETPOST_REQUEST_TIMEOUT="soon": not a duration`},
		{"JETPOST_ACK_WAIT", "1e300", `JETPOST_ACK_WAIT="1e300": out of range`},
		{"JETPOST_MAX_INFLIGHT", "many", `JETPOST_MAX_INFLIGHT="many": not a whole number`},
		{"JETPOST_BREAKER_FAILURES", "-1", `JETPOST_BREAKER_FAILURES="-1": not a whole number from 0`},
		{"JETPOST_BREAKER_FAILURE_RATIO", "NaN", `JETPOST_BREAKER_FAILURE_RATIO="NaN": not a number`},
		{"JETPOST_ADAPTIVE_CONCURRENCY", "yes please", `JETPOST_ADAPTIVE_CONCURRENCY="yes please": use true or false`},
	}
	for _, tc := range cases {
		t.Run(tc[0], func(t *testing.T) {
			setenv(t, tc[0], tc[1])
			_, err := LoadWorker()
			if err == nil || !strings.Contains(err.Error(), tc[2]) || strings.Contains(err.Error(), "%!") {
				t.Errorf("error %v, want %q", err, tc[2])
			}
		})
	}
}

// A set but empty variable is empty, not its default (JETPOST_IDEMPOTENCY_HEADER= disables the header).
func TestEmptyIsNotDefault(t *testing.T) {
	setenv(t, "JETPOST_IDEMPOTENCY_HEADER", "")
	c, err := LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	if c.IdempotencyHeader != "" {
		t.Errorf("idempotency header %q, want none", c.IdempotencyHeader)
	}
}

func TestUnknownVariablesNameTheClosest(t *testing.T) {
	// Typos are spelt from Prefix, so that the repository scan below
	// does not take them for names in use.
	typo := func(s string) string { return Prefix + "_" + s }
	env := []string{
		typo("MAXINFLIGHT=8"), typo("REQEST_TIMEOUT=30"), typo("NATS_URLS=nats://x"),
		"JETPOST_MAX_INFLIGHT=8", "JETPOST_NATS_URL=nats://x", // the worker's and enqueue's own
		"JETPOST_WORKER_PASSWORD=s", "PATH=/bin", "X" + typo("FOO=1"),
	}
	got := UnknownVariables(env)
	want := []Unknown{{typo("MAXINFLIGHT"), "JETPOST_MAX_INFLIGHT"}, {typo("REQEST_TIMEOUT"), "JETPOST_REQUEST_TIMEOUT"}, {typo("NATS_URLS"), "JETPOST_NATS_URL"}}
	if !slices.Equal(got, want) {
		t.Errorf("unknown %v, want %v", got, want)
	}
	if s := got[0].String(); !strings.Contains(s, typo("MAXINFLIGHT")) || !strings.Contains(s, "did you mean JETPOST_MAX_INFLIGHT?") {
		t.Errorf("warning %q", s)
	}
}

// Every JETPOST_* name in the repository's code, tests, scripts and
// examples (not its prose, which may show a typo) is a variable the
// commands read, one of OtherVariables, or the name of a stream or bucket:
// a test or benchmark that sets one of its own must list it, or the
// commands it starts would warn.
func TestEveryNameInTheRepositoryIsKnown(t *testing.T) {
	notVariables := []string{"JETPOST_JOBS", "JETPOST_RESULTS", "JETPOST_DLQ", "JETPOST_DONE", "JETPOST_ATTEMPTS", "JETPOST_RATES", "JETPOST_HOSTLIMITS", "JETPOST_BREAKERS", "JETPOST_BATCHES"}
	known := append(append(Names(), OtherVariables()...), notVariables...)
	re := regexp.MustCompile(`JETPOST_[A-Z0-9_]*[A-Z0-9]\b`)
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && d.Name() != ".ci" && path != "../.." || d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".sh", ".yml", ".yaml", ".conf", ".js", ".mjs", ".json":
		default:
			if d.Name() != "Makefile" && d.Name() != "Dockerfile" && d.Name() != "run" {
				return nil
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllString(string(b), -1) {
			if !slices.Contains(known, m) && !strings.HasSuffix(m, "_") {
				t.Errorf("%s: %s is neither a variable of the commands nor in OtherVariables", path, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
