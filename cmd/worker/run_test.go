package main

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/jetpost/jetpost/internal/config"
)

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--version"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if out := stdout.String(); !strings.HasPrefix(out, "worker ") || !strings.Contains(out, runtime.Version()) || strings.Count(out, "\n") != 1 {
		t.Errorf("worker --version printed %q", out)
	}
	buildVersion = "v9.8.7-1-gabcdef"
	t.Cleanup(func() { buildVersion = "" })
	stdout.Reset()
	if err := run(context.Background(), []string{"-version"}, &stdout, &stderr); err != nil || !strings.HasPrefix(stdout.String(), "worker v9.8.7-1-gabcdef (") {
		t.Errorf("with a stamped version: %q, %v", stdout.String(), err)
	}
}

// A misspelt variable is named with the one meant; enqueue's own are not
// warned about (they are the worker's too), nor the other names the
// repository uses.
func TestUnknownVariableWarned(t *testing.T) {
	t.Setenv("JETPOST_DATA_DIR", t.TempDir())
	t.Setenv("JETPOST_EMBEDDED_LISTEN", "127.0.0.1:-1")
	t.Setenv("JETPOST_LOG_FORMAT", "json")
	t.Setenv(config.Prefix+"_MAXINFLIGHT", "8")
	t.Setenv("JETPOST_WORKER_PASSWORD", "secret")
	t.Setenv("JETPOST_REQUEST_TIMEOUT", "30") // seconds, as in job files
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the warnings come before anything runs
	var stdout, stderr bytes.Buffer
	err := run(ctx, nil, &stdout, &stderr)
	if ue := (*usageError)(nil); errors.As(err, &ue) {
		t.Fatalf("usage error: %v", err)
	}
	log := stderr.String()
	if !strings.Contains(log, config.Prefix+"_MAXINFLIGHT is not a jetpost variable") || !strings.Contains(log, "did you mean JETPOST_MAX_INFLIGHT?") {
		t.Errorf("no warning naming the typo and the variable meant:\n%s", log)
	}
	if strings.Count(log, "not a jetpost variable") != 1 {
		t.Errorf("warnings beyond the typo's:\n%s", log)
	}
}

func TestBadDurationIsAUsageError(t *testing.T) {
	t.Setenv("JETPOST_REQUEST_TIMEOUT", "soon")
	err := run(context.Background(), nil, &bytes.Buffer{}, &bytes.Buffer{})
	var ue *usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), `JETPOST_REQUEST_TIMEOUT="soon"`) || strings.Contains(err.Error(), "%!") {
		t.Errorf("error %v, want a usage error naming the variable", err)
	}
}
