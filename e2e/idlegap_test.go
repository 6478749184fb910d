package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
)

// Issue 12: files keep arriving. One worker process (JETPOST_MAX_INFLIGHT=40)
// against a host answering in 50 ms takes a batch, waits out an idle gap,
// takes the next: gaps of 0, 5 and 30 s, adaptive concurrency on and off.
// The limiter must not read the gap as the host's latency, which would park
// refused jobs for up to two minutes.
//
// The primary assertion is an invariant a loaded machine cannot break: the
// latency the limiter paced refused jobs on (named in each deferral of the
// worker's debug log) is never longer than a request to the host actually
// took (the results' duration_ms), give or take a second of scheduling. How
// long each batch took is logged, and only loosely bounded.
func TestBatchesAfterIdleGaps(t *testing.T) {
	for _, adaptive := range []string{"true", "false"} {
		t.Run("adaptive="+adaptive, func(t *testing.T) {
			t.Parallel()
			idleGapBatches(t, adaptive)
		})
	}
}

func idleGapBatches(t *testing.T, adaptive string) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{Latency: 50 * time.Millisecond})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	w := start(t, "worker", append(workerEnv(ns.ClientURL(), "JETPOST_MAX_INFLIGHT=40",
		"JETPOST_ADAPTIVE_CONCURRENCY="+adaptive), "JETPOST_LOG_LEVEL=debug"))
	w.waitLine("consuming jobs")
	const n = 600
	type batch struct {
		gap      time.Duration
		took     time.Duration
		longest  time.Duration // the longest deferral the worker gave
		paced    time.Duration // the longest latency a deferral was paced on
		deferred int
	}
	batches := []batch{{}, {gap: 0}, {gap: 5 * time.Second}, {gap: 30 * time.Second}}
	logged := 0
	var slowest time.Duration // the longest request so far, as the worker timed it
	for i := range batches {
		b := &batches[i]
		// Idle: nothing in flight, nothing queued; the time is the gap.
		time.Sleep(b.gap)
		name := fmt.Sprintf("gap%d", i)
		out := filepath.Join(t.TempDir(), name+".jsonl")
		began := time.Now()
		code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--batch", name, "--wait", "--out", out,
			idleJobs(t, name, n, srv.URL))
		b.took = time.Since(began)
		if code != 0 {
			t.Fatalf("batch %d: enqueue exit %d: %s", i, code, stderr)
		}
		res := readResults(t, out)
		if len(res) != n {
			t.Fatalf("batch %d: %d results for %d jobs", i, len(res), n)
		}
		for id, r := range res {
			if !r.OK || r.Attempts != 1 {
				t.Fatalf("batch %d: job %s ok=%v attempts=%d (%s)", i, id, r.OK, r.Attempts, r.Error)
			}
			slowest = max(slowest, time.Duration(r.DurationMS)*time.Millisecond)
		}
		// Every deferral of this batch was logged before its last result.
		b.longest, b.paced, b.deferred, logged = deferrals(t, w, logged)
		t.Logf("batch %d after %v idle: %v, %d deferrals, longest %v, paced on at most %v (slowest request so far %v)",
			i, b.gap, b.took.Round(time.Millisecond), b.deferred, b.longest.Round(time.Millisecond),
			b.paced.Round(time.Millisecond), slowest)
		// Before any answer the limiter guesses 100 ms; a stall is measured
		// from a request's start, which scheduling may put up to a second
		// after the answer that freed its place.
		if limit := max(100*time.Millisecond, slowest) + time.Second; b.paced > limit {
			t.Errorf("batch %d after %v idle: refused jobs paced on a latency of %v, yet no request took over %v",
				i, b.gap, b.paced, slowest)
		}
	}
	// Even "no gap" is the second or so enqueue takes to start, which the
	// defect read as a stall too: every later batch is held to the first.
	first := batches[0]
	// A fresh host starts below its ceiling, so the first batch is always
	// refused some: without one line naming its pace, nothing was checked.
	if first.paced == 0 {
		t.Errorf("the first batch's %d deferrals named no pace: the invariant checked nothing", first.deferred)
	}
	for i, b := range batches[1:] {
		if limit := 10*first.took + 5*time.Second; b.took > limit {
			t.Errorf("batch %d after %v idle took %v, the first %v", i+1, b.gap, b.took, first.took)
		}
	}
}

// idleJobs writes n jobs with ids of their own (a batch name as prefix).
func idleJobs(t *testing.T, prefix string, n int, url string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), prefix+".jsonl")
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"id":"%s-%05d","method":"GET","url":"%s/items/%d"}`+"\n", prefix, i, url, i)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// deferrals reads the worker's log lines from line from on: the longest
// deferral delay, the longest latency a deferral was paced on, how many
// jobs were deferred, and where it stopped.
func deferrals(t *testing.T, p *proc, from int) (longest, paced time.Duration, count, next int) {
	t.Helper()
	p.mu.Lock()
	lines := p.lines[from:]
	next = len(p.lines)
	p.mu.Unlock()
	for _, line := range lines {
		if !strings.Contains(line, "deferred") {
			continue
		}
		var v struct {
			Message string  `json:"message"`
			Delay   float64 `json:"delay"` // milliseconds
			Error   string  `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil || !strings.HasPrefix(v.Message, "deferred") {
			continue
		}
		count++
		longest = max(longest, time.Duration(v.Delay*float64(time.Millisecond)))
		if m := pacedOn.FindStringSubmatch(v.Error); m != nil {
			d, err := time.ParseDuration(m[1])
			if err != nil {
				t.Fatalf("deferral %q: %v", v.Error, err)
			}
			paced = max(paced, d)
		}
	}
	return longest, paced, count, next
}

var pacedOn = regexp.MustCompile(`paced on a latency of (\S+)`)
