package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
)

// goal is one line of the closing table: a goal of issue 17, what jetpost
// measured, the raw net/http client beside it where it has a counterpart,
// and whether the goal is met.
type goal struct {
	item, what, jetpost, raw, target, verdict string
}

// headline holds the figures of the before/after table's row, as the
// scenarios measure them (empty: not run).
type headline struct {
	throughput, latency, cpu, cases, scale string
}

// beforeAfterHeader is the before/after table's header in BENCHMARKS.md.
const beforeAfterHeader = "| commit | run (UTC), load avg before → after | throughput ÷ raw | CPU µs/job: worker / broker / enqueue (raw client) | latency: ideal ÷ wall (raw) | 429s: capacity fraction / % 429 | scale: last ÷ first tenth; worker RSS trend |\n|---|---|---|---|---|---|---|\n"

// beforeAfterRow is this run's row of that table.
func (b *bench) beforeAfterRow(loadAfter string) string {
	dash := func(s string) string {
		if s == "" {
			return "—"
		}
		return s
	}
	h := b.headline
	return fmt.Sprintf("| %s | %s, %s → %s | %s | %s | %s | %s | %s |\n", b.revision, time.Now().UTC().Format("2006-01-02 15:04"),
		b.loadBefore, loadAfter, dash(h.throughput), dash(h.cpu), dash(h.latency), dash(h.cases), dash(h.scale))
}

// goalsMarkdown is the compact table that ends the report.
func (b *bench) goalsMarkdown() string {
	if len(b.goals) == 0 {
		return ""
	}
	var s strings.Builder
	s.WriteString("\nIssue 17's goals, side by side with the raw net/http client (same run):\n\n")
	s.WriteString("| goal | figure | jetpost | raw client | target | verdict |\n|---|---|---|---|---|---|\n")
	for _, g := range b.goals {
		raw := g.raw
		if raw == "" {
			raw = "—"
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s | %s |\n", g.item, g.what, g.jetpost, raw, g.target, g.verdict)
	}
	s.WriteString("\nThis run's row for the before/after table:\n\n" + beforeAfterHeader + b.beforeAfterRow(benchkit.LoadAvg()))
	return s.String()
}

// throughputGoals: point 1, from the median paired round.
func (b *bench) throughputGoals(n int, ratio float64, rounds string, jp jpRun, raw rawResult, rawT float64) {
	item := "1. CPU per job (throughput-bound, median of paired rounds)"
	perJob := func(d float64) float64 { return d / float64(n) * 1e6 }
	w, br, enq := perJob(jp.workerCPU.Seconds()), perJob(jp.natsCPU.Seconds()), perJob(jp.enq.cpu.Seconds())
	rawUS := perJob(raw.cpu.Seconds())
	b.headline.throughput = fmt.Sprintf("%.3f (%s)", ratio, rounds)
	b.headline.cpu = fmt.Sprintf("%.0f / %.0f / %.0f (%.0f)", w, br, enq, rawUS)
	b.goals = append(b.goals, goal{
		item: item, what: "jobs/s ÷ raw client req/s",
		jetpost: fmt.Sprintf("**%.3f** (%.0f jobs/s; rounds %s)", ratio, jp.rate(), rounds),
		raw:     fmt.Sprintf("%.0f req/s", raw.rate()), target: "≥ 0.45",
		verdict: verdict(ratio >= 0.45, fmt.Sprintf("%.0f %% of the goal", ratio/0.45*100)),
	}, goal{
		item: item, what: "worker CPU per job ÷ raw client CPU per request",
		jetpost: fmt.Sprintf("**%.0f µs** (%.2f ×)", w, w/rawUS), raw: fmt.Sprintf("%.0f µs", rawUS), target: "≤ 100 µs",
		verdict: verdict(w <= 100, fmt.Sprintf("%.0f µs over", w-100)),
	}, goal{
		item: item, what: "broker CPU per job",
		jetpost: fmt.Sprintf("**%.0f µs** (%.2f × raw)", br, br/rawUS), raw: "none", target: "≤ 70 µs",
		verdict: verdict(br <= 70, fmt.Sprintf("%.0f µs over", br-70)),
	}, goal{
		item: item, what: "enqueue CPU per job; target CPU per request",
		jetpost: fmt.Sprintf("%.0f µs; target %.0f µs", enq, perJob(jp.targetCPU.Seconds())),
		raw:     fmt.Sprintf("none; target %.0f µs", rawT/float64(n)*1e6), target: "tracked", verdict: "—",
	})
}

// throughputUnfinished: point 1 when round i did not finish in time.
func (b *bench) throughputUnfinished(i, n int, jp jpRun, raw rawResult) {
	got := fmt.Sprintf("did not finish: %s of %s results in %s (round %d)", thousands(int(jp.results.stored)), thousands(n), ms(jp.enq.wall), i+1)
	b.headline.throughput = got
	b.goals = append(b.goals, goal{
		item: "1. CPU per job (throughput-bound, median of paired rounds)", what: "jobs/s ÷ raw client req/s",
		jetpost: "**" + got + "**", raw: fmt.Sprintf("%.0f req/s", raw.rate()), target: "≥ 0.45",
		verdict: "**short**: did not finish",
	})
}

// latencyGoal: point 2.
func (b *bench) latencyGoal(n, inflight int, jpOfIdeal, rawOfIdeal float64) {
	b.headline.latency = fmt.Sprintf("%.3f (%.3f)", jpOfIdeal, rawOfIdeal)
	b.goals = append(b.goals, goal{
		item: fmt.Sprintf("2. latency-bound (%s jobs, 50 ms, 1 worker × %d)", thousands(n), inflight),
		what: "ideal N·L/P ÷ wall time", jetpost: fmt.Sprintf("**%.3f**", jpOfIdeal), raw: fmt.Sprintf("%.3f", rawOfIdeal),
		target: "≥ 0.95", verdict: verdict(jpOfIdeal >= 0.95, fmt.Sprintf("%.3f", jpOfIdeal)),
	})
}

// isolationGoals: point 2's proviso, the fragile host's protection holds.
func (b *bench) isolationGoals(r503, rHang float64) {
	item := "2. isolation holds (B's rate beside a broken A ÷ alone)"
	b.goals = append(b.goals, goal{
		item: item, what: "A answers 503", jetpost: fmt.Sprintf("**%.3f**", r503), target: "≥ 0.8",
		verdict: verdict(r503 >= 0.8, fmt.Sprintf("%.3f", r503)),
	}, goal{
		item: item, what: "A accepts and never answers", jetpost: fmt.Sprintf("**%.3f**", rHang), target: "≥ 0.6",
		verdict: verdict(rHang >= 0.6, fmt.Sprintf("%.3f", rHang)),
	})
}
