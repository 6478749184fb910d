package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
)

// The adaptive scenario (issue 17, point 3) runs bench/cmd/limitbench as a
// child process and reads its capacity table: a target answering 429 above
// 30 concurrent requests of 50 ms (capacity 600 jobs/s), its 429s without
// Retry-After, with "Retry-After: 1" and with an HTTP date, one worker and
// three. It relies on limitbench's printed rows only:
//
//	| adaptive concurrency …; 3 workers; 429 with `Retry-After: 1` | 12000 | 561 jobs/s (…) | 12345 requests, 120 × 429 (0.97%) | …
//
// A limitbench without -retry-after (before issue 17) runs its single
// case: one worker, 429s without Retry-After.

const capacityJobsPerSec = 600

// capacityCase is one row of limitbench's capacity table.
type capacityCase struct {
	retryAfter string // none, seconds or date
	workers    int
	jobsPerSec float64
	pct429     float64
}

var (
	capJobsRe    = regexp.MustCompile(`\| (\d+(?:\.\d+)?) jobs/s \(`)
	capPctRe     = regexp.MustCompile(`× 429 \((\d+(?:\.\d+)?)%\)`)
	capWorkersRe = regexp.MustCompile(`(\d+) workers`)
)

// parseCapacityRows reads the adaptive rows of limitbench's output.
func parseCapacityRows(out string) ([]capacityCase, error) {
	var cases []capacityCase
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "| adaptive concurrency") {
			continue
		}
		title, _, _ := strings.Cut(strings.TrimPrefix(l, "| "), " | ")
		jm, pm := capJobsRe.FindStringSubmatch(l), capPctRe.FindStringSubmatch(l)
		if jm == nil || pm == nil {
			return nil, fmt.Errorf("limitbench row not understood: %s", l)
		}
		c := capacityCase{retryAfter: "none", workers: 1}
		c.jobsPerSec, _ = strconv.ParseFloat(jm[1], 64)
		c.pct429, _ = strconv.ParseFloat(pm[1], 64)
		switch {
		case strings.Contains(title, "HTTP date"):
			c.retryAfter = "date"
		case strings.Contains(title, "Retry-After: 1"):
			c.retryAfter = "seconds"
		}
		if m := capWorkersRe.FindStringSubmatch(title); m != nil {
			c.workers, _ = strconv.Atoi(m[1])
		}
		cases = append(cases, c)
	}
	if len(cases) == 0 {
		return nil, errors.New("limitbench printed no adaptive rows")
	}
	return cases, nil
}

// limitbenchArgs are the flags for the adaptive cases, given what this
// limitbench's -h offers.
func (b *bench) limitbenchArgs(help string) []string {
	args := []string{"-scenario", "adaptive"}
	if strings.Contains(help, "-retry-after") {
		args = append(args, "-retry-after", "none,seconds,date", "-workers", "1,3")
	}
	if strings.Contains(help, "-worker ") || strings.Contains(help, "-worker\n") {
		// The worker every other scenario runs, not a second build.
		args = append(args, "-worker", filepath.Join(b.binDir, "worker"))
	}
	if b.quick {
		args = append(args, "-quick")
	}
	return args
}

func (b *bench) adaptive(ctx context.Context) error {
	bin := filepath.Join(b.binDir, "limitbench")
	if b.limitbench != "" {
		bin = b.limitbench
	}
	help, _ := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	args := b.limitbenchArgs(string(help))
	b.logf("adaptive 429s: limitbench %s", strings.Join(args, " "))
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = b.root, benchkit.CleanEnv()
	cmd.Stdout, cmd.Stderr = &out, b.out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("limitbench: %w", err)
	}
	cases, err := parseCapacityRows(out.String())
	if err != nil {
		return err
	}
	var hl []string
	for _, c := range cases {
		frac := c.jobsPerSec / capacityJobsPerSec
		hl = append(hl, fmt.Sprintf("%s×%d %.2f / %.1f", c.retryAfter, c.workers, frac, c.pct429))
		w := "1 worker"
		if c.workers > 1 {
			w = fmt.Sprintf("%d workers", c.workers)
		}
		b.goals = append(b.goals, goal{
			item:    "3. a 429 teaches the adaptive limit (cap 30 × 50 ms = 600 jobs/s)",
			what:    fmt.Sprintf("capacity fraction, %% answered 429: Retry-After %s, %s", c.retryAfter, w),
			jetpost: fmt.Sprintf("**%.2f**, **%.2f %%** (%.0f jobs/s)", frac, c.pct429, c.jobsPerSec),
			target:  "≥ 0.9, ≤ 2 %",
			verdict: verdict(frac >= 0.9 && c.pct429 <= 2, fmt.Sprintf("%.2f, %.2f %%", frac, c.pct429)),
		})
	}
	b.headline.cases = strings.Join(hl, "; ")
	if !strings.Contains(string(help), "-retry-after") {
		b.notes = append(b.notes, "This limitbench has no -retry-after: only its one case (one worker, 429s without Retry-After) was measured.")
	}
	return nil
}
