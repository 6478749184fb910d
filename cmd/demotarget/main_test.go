package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/target"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// lockedBuffer is stderr for run: the server's goroutines may write to it
// while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRunServesAndExitsCleanly(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	pr, pw := io.Pipe()
	var stderr lockedBuffer
	errc := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"-addr", "127.0.0.1:0", "-log"}, pw, &stderr)
		pw.Close()
		errc <- err
	}()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	first, ok := <-lines
	if !ok {
		t.Fatalf("run printed nothing; error %v, stderr %q", <-errc, stderr.String())
	}
	base, found := strings.CutPrefix(first, "demotarget listening on ")
	if !found || !strings.HasPrefix(base, "http://127.0.0.1:") || strings.HasSuffix(base, ":0") {
		t.Fatalf("first line %q, want the listening address with its real port", first)
	}

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	send := func() int {
		req, err := http.NewRequestWithContext(ctx, "POST", base+"/orders/17?fail_first=1", strings.NewReader(`{"a":1}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Idempotency-Key", "job-1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	if a, b := send(), send(); a != 503 || b != 200 {
		t.Fatalf("statuses %d, %d; want 503, 200", a, b)
	}
	client.CloseIdleConnections()

	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run: %v (stderr %q)", err, stderr.String())
	}
	last, ok := <-lines
	if !ok {
		t.Fatal("no final stats line")
	}
	var s target.Stats
	if err := json.Unmarshal([]byte(last), &s); err != nil {
		t.Fatalf("final line %q: %v", last, err)
	}
	if s.Requests != 2 || s.ByStatus[503] != 1 || s.ByStatus[200] != 1 || s.InFlight != 0 {
		t.Fatalf("final stats %+v", s)
	}
	if extra, ok := <-lines; ok {
		t.Fatalf("unexpected output after the stats line: %q", extra)
	}
	if log := stderr.String(); !strings.Contains(log, `POST /orders/17?fail_first=1 key="job-1" -> 503`) {
		t.Fatalf("request log missing from stderr: %q", log)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-fail-rate", "2"},
		{"-fail-status", "200"},
		{"-latency", "-1s"},
		{"-nope"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), args, &stdout, &stderr)
		if err == nil {
			t.Errorf("%q: accepted", args)
		}
		if stdout.Len() != 0 {
			t.Errorf("%q: printed %q to stdout", args, stdout.String())
		}
	}
	var stderr bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, io.Discard, &stderr); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "-fail-rate") {
		t.Fatalf("-h: err %v, usage %q", err, stderr.String())
	}
}
