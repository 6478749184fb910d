package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
)

// -base REV: the throughput rounds also run a worker built from another
// commit, in the same rounds as this tree's worker and the raw client, so
// a before/after comparison shares the machine's state. Only the worker is
// swapped; enqueue and the broker are this tree's.

// buildBase builds cmd/worker from rev (a `git archive` into tmp, so no
// work tree is touched) and returns the binary and rev's short name.
func buildBase(ctx context.Context, root, tmp, rev string) (bin, label string, err error) {
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", rev).Output()
	if err != nil {
		return "", "", fmt.Errorf("-base %s: %w", rev, err)
	}
	label = strings.TrimSpace(string(out))
	src := filepath.Join(tmp, "base-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", "", err
	}
	arch := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, label, src)
	arch.Stderr = os.Stderr
	if err := arch.Run(); err != nil {
		return "", "", fmt.Errorf("-base %s: git archive: %w", rev, err)
	}
	dir := filepath.Join(tmp, "base-bin")
	if err := benchkit.Build(ctx, src, dir, "./cmd/worker"); err != nil {
		return "", "", fmt.Errorf("-base %s: %w", rev, err)
	}
	return filepath.Join(dir, "worker"), label, nil
}

// baseRound runs round i's jetpost leg with the -base worker and records
// it; ratio is its rate ÷ the raw client's in the same round.
func (b *bench) baseRound(ctx context.Context, i, n, inflight int, tgt *demoTarget, raw rawResult) (ratio float64, err error) {
	jp, err := b.runJetpost(ctx, jpSpec{batch: fmt.Sprintf("base%d", i+1), n: n, workers: 1, env: inflightEnv(inflight), tgt: tgt, workerBin: b.baseWorker})
	if err != nil {
		return 0, err
	}
	if jp.timedOut {
		return 0, fmt.Errorf("the %s worker did not finish round %d", b.baseLabel, i+1)
	}
	ratio = jp.rate() / raw.rate()
	b.logf("throughput round %d: %s worker %.0f jobs/s = %.3f of raw", i+1, b.baseLabel, jp.rate(), ratio)
	b.addRun(fmt.Sprintf("jetpost, worker of %s, round %d", b.baseLabel, i+1), fmt.Sprintf("1×%d, 0 ms", inflight), jp,
		fmt.Sprintf("%.3f of raw (-base %s: its worker, this tree's enqueue)", ratio, b.baseLabel))
	return ratio, nil
}

// baseGoal puts the -base worker's median ratio beside this tree's.
func (b *bench) baseGoal(ratios []float64) {
	var all []string
	for _, r := range ratios {
		all = append(all, fmt.Sprintf("%.3f", r))
	}
	m := median(ratios)
	b.goals = append(b.goals, goal{
		item:    "1. CPU per job (throughput-bound, median of paired rounds)",
		what:    fmt.Sprintf("jobs/s ÷ raw client req/s with the worker of %s (-base), same rounds", b.baseLabel),
		jetpost: fmt.Sprintf("%.3f (rounds %s)", m, strings.Join(all, ", ")),
		target:  "≥ 0.45", verdict: verdict(m >= 0.45, fmt.Sprintf("%.0f %% of the goal", m/0.45*100)),
	})
}
