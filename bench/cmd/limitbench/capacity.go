package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
)

// capSpec is one capacity run against the target that answers 429 above
// 30 concurrent requests, each taking 50 ms (capacity 600 jobs/s).
type capSpec struct {
	// mode: "adaptive" (the default), "fixed" (a pool of 200, as the seed
	// scripts did) or "oracle" (a fixed pool of exactly the capacity: the
	// most this machine's pipeline gets out of the target).
	mode string
	// retryAfter is what the target's 429 carries (retryAfter* below).
	retryAfter string
	workers    int
}

// What a 429 of the capacity target carries.
const (
	retryAfterNone    = "none"
	retryAfterSeconds = "seconds" // Retry-After: 1
	retryAfterDate    = "date"    // an HTTP date about a second ahead
)

func (s capSpec) key() string {
	return fmt.Sprintf("%s/%s/%d", s.mode, s.retryAfter, s.workers)
}

func (s capSpec) title() string {
	var name string
	switch s.mode {
	case "fixed":
		name = "fixed pool of 200: `JETPOST_MAX_INFLIGHT=200 JETPOST_ADAPTIVE_CONCURRENCY=false`"
	case "oracle":
		name = "oracle: a fixed pool of exactly the capacity, `JETPOST_MAX_INFLIGHT=30 JETPOST_ADAPTIVE_CONCURRENCY=false`"
	default:
		name = "adaptive concurrency (the default), `JETPOST_MAX_INFLIGHT=200`"
	}
	w := "1 worker"
	if s.workers > 1 {
		w = fmt.Sprintf("%d workers", s.workers)
	}
	ra := map[string]string{retryAfterNone: "no `Retry-After`", retryAfterSeconds: "`Retry-After: 1`",
		retryAfterDate: "`Retry-After:` HTTP date ~1 s ahead"}[s.retryAfter]
	return fmt.Sprintf("%s; %s; 429 with %s", name, w, ra)
}

func (s capSpec) env() []string {
	switch s.mode {
	case "fixed":
		return []string{"JETPOST_MAX_INFLIGHT=200", "JETPOST_ADAPTIVE_CONCURRENCY=false"}
	case "oracle":
		return []string{"JETPOST_MAX_INFLIGHT=30", "JETPOST_ADAPTIVE_CONCURRENCY=false"}
	}
	return []string{"JETPOST_MAX_INFLIGHT=200", "JETPOST_ADAPTIVE_CONCURRENCY=true"}
}

// capacitySpecs expands a capacity scenario name: "adaptive" runs every
// kind of Retry-After in o.retryAfter with every worker count in o.workers;
// "fixed" and "oracle" run one worker against 429s without Retry-After.
func capacitySpecs(name string, o options) []capSpec {
	if name != "adaptive" {
		return []capSpec{{mode: name, retryAfter: retryAfterNone, workers: 1}}
	}
	var specs []capSpec
	for _, w := range o.workers {
		for _, ra := range o.retryAfter {
			specs = append(specs, capSpec{mode: name, retryAfter: ra, workers: w})
		}
	}
	return specs
}

// repeatCapacity runs a capacity scenario n times: the row is the median
// run by throughput, and lists every run's throughput and share of 429s.
func (b *bench) repeatCapacity(ctx context.Context, s capSpec, n int) (row, error) {
	var runs []row
	for range max(1, n) {
		r, err := b.capacity(ctx, s)
		if err != nil {
			return row{}, err
		}
		runs = append(runs, r)
	}
	if len(runs) == 1 {
		return runs[0], nil
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].jobsPerSec < runs[j].jobsPerSec })
	med := runs[len(runs)/2]
	var tps []string
	lo, hi := runs[0].pct429, runs[0].pct429
	for _, r := range runs {
		tps = append(tps, fmt.Sprintf("%.0f", r.jobsPerSec))
		lo, hi = min(lo, r.pct429), max(hi, r.pct429)
	}
	for _, r := range runs {
		med.sum.RunsCapacity = append(med.sum.RunsCapacity, round2(r.jobsPerSec/600))
		med.sum.RunsPct429 = append(med.sum.RunsPct429, round2(r.pct429))
	}
	med.runs = fmt.Sprintf("%s, %d runs: %s jobs/s (the table shows the median); %.2f–%.2f %% of requests answered 429",
		med.name, len(runs), strings.Join(tps, ", "), lo, hi)
	return med, nil
}

func (b *bench) capacity(ctx context.Context, s capSpec) (row, error) {
	n := 12000
	if b.quick {
		n = 2000
	}
	tg := &recorder{capacity: 30, latency: 50 * time.Millisecond, retryAfter: s.retryAfter}
	turl, natsURL, stop, err := b.stage(tg)
	if err != nil {
		return row{}, err
	}
	defer stop()
	name := s.title()
	b.logf("%s: %d jobs ...", name, n)
	res, err := b.batch(ctx, natsURL, s.workers, s.env(), turl, n, 0, "")
	if err != nil {
		return row{}, err
	}
	arr, st := tg.snapshot()
	total := st[200] + st[429]
	printArrivals(arr)
	span := tg.lastOK().Sub(arr[0])
	jobsPerSec := float64(res.ok) / span.Seconds()
	pct := 100 * float64(st[429]) / float64(total)
	b.logf("  %.0f jobs/s (%.2f × 600), %.2f%% 429, %d ok, %d failed, results per worker %s", jobsPerSec, jobsPerSec/600, pct, res.ok, res.failed, res.perWorker())
	sum := &summary{Scenario: s.mode, RetryAfter: s.retryAfter, Workers: s.workers, Jobs: n,
		JobsPerSec: round2(jobsPerSec), Capacity: round2(jobsPerSec / 600), Requests: total, Pct429: round2(pct),
		OK: res.ok, Failed: res.failed, WallSec: round2(res.wall.Seconds()), Load: benchkit.LoadAvg()}
	return row{capacity: true, name: s.key(), jobsPerSec: jobsPerSec, pct429: pct, sum: sum,
		text: fmt.Sprintf("| %s | %d | %.0f jobs/s (%.2f × 600) | %d requests, %d × 429 (%.2f%%) | %d | %d ok, %d failed; per worker %s | %.1fs |",
			name, n, jobsPerSec, jobsPerSec/600, total, st[429], pct, tg.peak.Load(),
			res.ok, res.failed, res.perWorker(), res.wall.Seconds())}, nil
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// setRetryAfter puts on a 429 what the target was told to say.
func setRetryAfter(h http.Header, kind string, now time.Time) {
	switch kind {
	case retryAfterSeconds:
		h.Set("Retry-After", "1")
	case retryAfterDate:
		// Whole seconds, as HTTP dates are: 0.5–1.5 s ahead, 1 s on average.
		h.Set("Retry-After", now.Add(1500*time.Millisecond).UTC().Format(http.TimeFormat))
	}
}

// printArrivals prints, with LIMITBENCH_DEBUG, the target's arrivals per
// 250 ms of a run.
func printArrivals(arr []time.Time) {
	if os.Getenv("LIMITBENCH_DEBUG") == "" || len(arr) == 0 {
		return
	}
	counts := map[int]int{}
	for _, a := range arr {
		counts[int(a.Sub(arr[0])/(250*time.Millisecond))]++
	}
	for i := 0; i <= int(arr[len(arr)-1].Sub(arr[0])/(250*time.Millisecond)); i++ {
		fmt.Fprintf(os.Stderr, "%d ", counts[i])
	}
	fmt.Fprintln(os.Stderr)
}

// parseAdaptive reads the adaptive scenario's -retry-after and -workers.
func (o *options) parseAdaptive(retryAfter, workers string) error {
	for _, ra := range strings.Split(retryAfter, ",") {
		switch ra = strings.TrimSpace(ra); ra {
		case retryAfterNone, retryAfterSeconds, retryAfterDate:
			o.retryAfter = append(o.retryAfter, ra)
		default:
			return fmt.Errorf("-retry-after %q: want none, seconds or date", ra)
		}
	}
	for _, w := range strings.Split(workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 {
			return fmt.Errorf("-workers %q: want worker counts of at least 1", w)
		}
		o.workers = append(o.workers, n)
	}
	return nil
}
