package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
)

// The idle scenario (issue 12): one worker, JETPOST_MAX_INFLIGHT=40, a
// target answering every request in 50 ms; a batch, an idle gap, another
// batch of the same size, in the same worker process. Both batches should
// run at the same rate: nothing the worker keeps about the host may read
// the gap as a stall or a place in a line.

const (
	idleBegin   = "<!-- limitbench-idle:begin (go run ./bench/cmd/limitbench -scenario idle -write) -->"
	idleEnd     = "<!-- limitbench-idle:end -->"
	idleHeading = "## Batches after an idle gap"
)

// idle runs the scenario once with adaptive concurrency on ("true") or
// off, and returns the wall time of each batch.
func (b *bench) idle(ctx context.Context, adaptive string, gap time.Duration) ([2]batchResult, error) {
	const n = idleJobs
	var runs [2]batchResult
	tg := &recorder{latency: 50 * time.Millisecond}
	turl, natsURL, stop, err := b.stage(tg)
	if err != nil {
		return runs, err
	}
	defer stop()
	env := []string{"JETPOST_MAX_INFLIGHT=40", "JETPOST_ADAPTIVE_CONCURRENCY=" + adaptive}
	stopWorkers, err := b.startWorkers(ctx, natsURL, 1, env)
	if err != nil {
		return runs, err
	}
	defer stopWorkers()
	js, closeJS, err := connect(ctx, natsURL)
	if err != nil {
		return runs, err
	}
	defer closeJS()
	for i, name := range []string{"first", "after-gap"} {
		if i > 0 {
			b.logf("idle, adaptive=%s: waiting %v ...", adaptive, gap)
			select {
			case <-time.After(gap):
			case <-ctx.Done():
				return runs, ctx.Err()
			}
		}
		b.logf("idle, adaptive=%s: batch %q of %d jobs ...", adaptive, name, n)
		if runs[i], err = publishAndWait(ctx, js, name, turl, n, 0, ""); err != nil {
			return runs, err
		}
		if runs[i].ok != n {
			return runs, fmt.Errorf("batch %s: %d of %d jobs ok", name, runs[i].ok, n)
		}
	}
	return runs, nil
}

const idleJobs = 600

// idleRow runs the scenario repeat times and summarises it: the median
// run by the ratio of the two batches' wall times, and every run's.
func (b *bench) idleRow(ctx context.Context, adaptive string, gap time.Duration, repeat int) (string, error) {
	var runs [][2]batchResult
	for range max(1, repeat) {
		r, err := b.idle(ctx, adaptive, gap)
		if err != nil {
			return "", err
		}
		runs = append(runs, r)
	}
	ratio := func(r [2]batchResult) float64 { return r[1].wall.Seconds() / r[0].wall.Seconds() }
	sort.Slice(runs, func(i, j int) bool { return ratio(runs[i]) < ratio(runs[j]) })
	var all []string
	for _, r := range runs {
		all = append(all, fmt.Sprintf("%.2fs → %.2fs", r[0].wall.Seconds(), r[1].wall.Seconds()))
	}
	med := runs[len(runs)/2]
	rate := func(r batchResult) float64 { return float64(idleJobs) / r.wall.Seconds() }
	return fmt.Sprintf("| `JETPOST_MAX_INFLIGHT=40 JETPOST_ADAPTIVE_CONCURRENCY=%s` | %d | %.2fs (%.0f jobs/s) | %.2fs (%.0f jobs/s) | %.2f | %s |",
		adaptive, idleJobs, med[0].wall.Seconds(), rate(med[0]), med[1].wall.Seconds(), rate(med[1]), ratio(med), strings.Join(all, "; ")), nil
}

// idleTable runs the scenario with adaptive concurrency on and off.
func (b *bench) idleTable(ctx context.Context, gap time.Duration, repeat int) (string, error) {
	var rows []string
	for _, adaptive := range []string{"true", "false"} {
		r, err := b.idleRow(ctx, adaptive, gap, repeat)
		if err != nil {
			return "", err
		}
		rows = append(rows, r)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "Measured %s (load averages %s before, %s after) with `go run ./bench/cmd/limitbench -scenario idle -gap %v%s`: one worker process, an embedded NATS server, an in-process target answering every request in 50 ms; a batch of %d jobs, %v idle, another %d in the same worker. Wall time is from the first publish to the last result; every job succeeded with one attempt. The row is the median run by ratio.\n\n",
		time.Now().UTC().Format("2006-01-02"), b.loadBefore, benchkit.LoadAvg(), gap, b.repeatFlag, idleJobs, gap, idleJobs)
	fmt.Fprintf(&sb, "| worker | jobs per batch | first batch | after %v idle | ratio | every run, first → after the gap |\n|---|---|---|---|---|---|\n", gap)
	for _, r := range rows {
		sb.WriteString(r + "\n")
	}
	sb.WriteString("\n")
	return sb.String(), nil
}
