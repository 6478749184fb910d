package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"
)

// row is one line of the summary table: a figure the issues set, what this
// run measured, and whether it meets it.
type row struct {
	scenario, figure, measured, goal, verdict string
}

// detail is one measured run, for the second table.
type detail struct {
	name      string
	n         int
	shape     string
	wall      time.Duration
	rate      float64
	workerCPU time.Duration
	enqCPU    time.Duration
	natsCPU   time.Duration
	tgtCPU    time.Duration
	rss       int64
	maxInFl   int64
	others    float64 // cores used by processes not ours, on average
	note      string
}

func (b *bench) addRun(name, shape string, r jpRun, note string) {
	b.details = append(b.details, detail{
		name: name, n: r.spec.n, shape: shape, wall: r.enq.wall, rate: r.rate(),
		workerCPU: r.workerCPU, enqCPU: r.enq.cpu, natsCPU: r.natsCPU, tgtCPU: r.targetCPU,
		rss: r.workerHWM, maxInFl: r.target.MaxInFlight, others: r.otherLoad, note: note,
	})
}

// unfinished records a run whose batch did not finish within its deadline.
func (b *bench) unfinished(scenario, figure, goal, shape string, r jpRun) {
	b.addRun(scenario, shape, r, fmt.Sprintf("did not finish: %d of %d results stored after %s; target max in flight %d",
		r.results.stored, r.spec.n, ms(r.enq.wall), r.target.MaxInFlight))
	b.rows = append(b.rows, row{
		scenario: scenario, figure: figure,
		measured: fmt.Sprintf("**did not finish** within %s (%d of %d results)", ms(r.enq.wall), r.results.stored, r.spec.n),
		goal:     goal, verdict: "**short**: did not finish",
	})
	b.logf("  %s did not finish within %s: %d of %d results", scenario, ms(r.enq.wall), r.results.stored, r.spec.n)
}

func verdict(ok bool, short string) string {
	if ok {
		return "meets"
	}
	return "**short**: " + short
}

func inflightEnv(n int) []string { return []string{"JETPOST_MAX_INFLIGHT=" + strconv.Itoa(n)} }

// latency: the pipe must stay full, so the batch takes N·L/P and not more.
func (b *bench) latency(ctx context.Context) error {
	const lat, inflight = 50 * time.Millisecond, 40
	n := b.scaled(10000, 1000)
	tgt, err := startTarget(ctx, b.binDir, "-latency", lat.String())
	if err != nil {
		return err
	}
	defer tgt.stop()
	b.logf("latency-bound: %d jobs, %v, 1 worker × %d", n, lat, inflight)
	if err := tgt.reset(); err != nil {
		return err
	}
	rt0 := tgt.cpu()
	raw, err := rawClient(ctx, tgt.url, "rawlat-", n, inflight)
	if err != nil {
		return err
	}
	rawT := tgt.cpu() - rt0
	ideal := time.Duration(n) * lat / inflight
	r, err := b.runJetpost(ctx, jpSpec{batch: "latency", n: n, workers: 1, env: inflightEnv(inflight), tgt: tgt, deadline: max(time.Minute, 4*ideal)})
	if err != nil {
		return err
	}
	b.details = append(b.details, detail{
		name: "raw net/http, latency-bound", n: n, shape: fmt.Sprintf("%d conns, %v", inflight, lat),
		wall: raw.wall, rate: raw.rate(), natsCPU: -1, workerCPU: -1, enqCPU: -1, tgtCPU: rawT, others: raw.others(rawT),
		note: fmt.Sprintf("%.3f × ideal: what the target and Go timers allow", raw.wall.Seconds()/ideal.Seconds()),
	})
	scenario := fmt.Sprintf("latency-bound: %s jobs, %v, 1 worker × %d", thousands(n), lat, inflight)
	if r.timedOut {
		b.unfinished(scenario, "wall time of `enqueue --wait` vs ideal N·L/P", "≤ 1.05 ×", fmt.Sprintf("1×%d, %v", inflight, lat), r)
		return nil
	}
	x := r.enq.wall.Seconds() / ideal.Seconds()
	b.latencyGoal(n, inflight, 1/x, ideal.Seconds()/raw.wall.Seconds())
	steady := r.results.span.Seconds() / (time.Duration(n-inflight) * lat / inflight).Seconds()
	note := fmt.Sprintf("enqueue ready to publish after %s, all published after %s; first→last result %.2fs (%.3f× its ideal); avg concurrency %.1f",
		ms(r.enq.startup), ms(r.enq.publish), r.results.span.Seconds(), steady,
		float64(r.target.Requests)*lat.Seconds()/r.enq.wall.Seconds())
	b.addRun("latency-bound", fmt.Sprintf("1×%d, %v", inflight, lat), r, note)
	b.logf("  wall %.2fs = %.3f × ideal %.2fs (%s)", r.enq.wall.Seconds(), x, ideal.Seconds(), note)
	b.rows = append(b.rows, row{
		scenario: scenario,
		figure:   "wall time of `enqueue --wait` vs ideal N·L/P",
		measured: fmt.Sprintf("%.2f s = **%.3f ×** ideal %.2f s (raw client: %.3f ×)", r.enq.wall.Seconds(), x, ideal.Seconds(), raw.wall.Seconds()/ideal.Seconds()),
		goal:     "≤ 1.05 ×",
		verdict:  verdict(x <= 1.05, fmt.Sprintf("%.1f %% over the bound", (x/1.05-1)*100)),
	})
	return nil
}

// throughput: with no latency, jetpost's cost per job against a plain
// client's, in paired rounds so both see the same machine state.
func (b *bench) throughput(ctx context.Context) error {
	const inflight = 256
	n := b.scaled(50000, 5000)
	tgt, err := startTarget(ctx, b.binDir)
	if err != nil {
		return err
	}
	defer tgt.stop()
	type pair struct {
		raw   rawResult
		rawT  time.Duration
		jp    jpRun
		ratio float64
		base  float64 // the -base worker's ratio in the same round
	}
	var pairs []pair
	for i := range b.rounds {
		if err := tgt.reset(); err != nil {
			return err
		}
		t0 := tgt.cpu()
		raw, err := rawClient(ctx, tgt.url, fmt.Sprintf("raw%d-", i+1), n, inflight)
		if err != nil {
			return err
		}
		rawT := tgt.cpu() - t0
		b.logf("throughput round %d: raw client %d requests over %d connections: %.0f req/s", i+1, n, inflight, raw.rate())
		jp, err := b.runJetpost(ctx, jpSpec{batch: fmt.Sprintf("tput%d", i+1), n: n, workers: 1, env: inflightEnv(inflight), tgt: tgt})
		if err != nil {
			return err
		}
		if jp.timedOut {
			b.unfinished(fmt.Sprintf("throughput-bound: %s jobs, 0 ms, 1 worker × %d (round %d)", thousands(n), inflight, i+1),
				"jobs/s ÷ raw client req/s", "≥ 0.45", fmt.Sprintf("1×%d, 0 ms", inflight), jp)
			b.throughputUnfinished(i, n, jp, raw)
			return nil // further rounds would only repeat it
		}
		p := pair{raw: raw, rawT: rawT, jp: jp, ratio: jp.rate() / raw.rate()}
		if b.baseWorker != "" {
			if p.base, err = b.baseRound(ctx, i, n, inflight, tgt, raw); err != nil {
				return err
			}
		}
		b.logf("throughput round %d: jetpost %.0f jobs/s = %.3f of raw", i+1, jp.rate(), p.ratio)
		pairs = append(pairs, p)
		b.details = append(b.details, detail{
			name: fmt.Sprintf("raw net/http, round %d", i+1), n: n, shape: fmt.Sprintf("%d conns, 0 ms", inflight),
			wall: raw.wall, rate: raw.rate(), natsCPU: -1, workerCPU: -1, enqCPU: -1, tgtCPU: rawT, others: raw.others(rawT),
			note: fmt.Sprintf("client CPU %s/req (this process)", us(raw.cpu, n)),
		})
		b.addRun(fmt.Sprintf("jetpost, round %d", i+1), fmt.Sprintf("1×%d, 0 ms", inflight), jp,
			fmt.Sprintf("%.3f of raw; enqueue published all after %s", p.ratio, ms(jp.enq.publish)))
	}
	sorted := append([]pair(nil), pairs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ratio < sorted[j].ratio })
	med := sorted[len(sorted)/2]
	var all string
	for i, p := range pairs {
		if i > 0 {
			all += ", "
		}
		all += fmt.Sprintf("%.3f", p.ratio)
	}
	b.rows = append(b.rows, row{
		scenario: fmt.Sprintf("throughput-bound: %s jobs, 0 ms, 1 worker × %d", thousands(n), inflight),
		figure:   fmt.Sprintf("jobs/s ÷ raw client req/s (%d conns), median of %d paired rounds", inflight, len(pairs)),
		measured: fmt.Sprintf("**%.3f** (%.0f jobs/s vs %.0f req/s; rounds %s)", med.ratio, med.jp.rate(), med.raw.rate(), all),
		goal:     "≥ 0.45",
		verdict:  verdict(med.ratio >= 0.45, fmt.Sprintf("%.0f %% of the bound", med.ratio/0.45*100)),
	})
	jp := med.jp
	b.throughputGoals(n, med.ratio, all, jp, med.raw, med.rawT.Seconds())
	if b.baseWorker != "" {
		var bases []float64
		for _, p := range pairs {
			bases = append(bases, p.base)
		}
		b.baseGoal(bases)
	}
	b.rows = append(b.rows, row{
		scenario: "CPU per job (median throughput round)",
		figure:   "CPU time per job: worker / enqueue / broker / target; raw client per request",
		measured: fmt.Sprintf("%s / %s / %s / %s; raw %s + target %s",
			us(jp.workerCPU, n), us(jp.enq.cpu, n), us(jp.natsCPU, n), us(jp.targetCPU, n), us(med.raw.cpu, n), us(med.rawT, n)),
		goal:    "tracked",
		verdict: "—",
	})
	return nil
}

// horizontal: workers add up.
func (b *bench) horizontal(ctx context.Context) error {
	const lat, inflight, workers = 50 * time.Millisecond, 40, 3
	n := b.scaled(15000, 1500)
	tgt, err := startTarget(ctx, b.binDir, "-latency", lat.String())
	if err != nil {
		return err
	}
	defer tgt.stop()
	b.logf("horizontal: %d jobs, %v, %d workers × %d", n, lat, workers, inflight)
	r, err := b.runJetpost(ctx, jpSpec{batch: "horizontal", n: n, workers: workers, env: inflightEnv(inflight), tgt: tgt})
	if err != nil {
		return err
	}
	scenario := fmt.Sprintf("horizontal: %s jobs, %v, %d workers × %d", thousands(n), lat, workers, inflight)
	if r.timedOut {
		b.unfinished(scenario, "jobs/s vs 3·40/L", "≥ 0.9 ×", fmt.Sprintf("%d×%d, %v", workers, inflight, lat), r)
		return nil
	}
	ideal := float64(workers*inflight) / lat.Seconds()
	x := r.rate() / ideal
	steady := float64(n-workers*inflight) / r.results.span.Seconds() / ideal
	note := fmt.Sprintf("first→last result %.0f jobs/s (%.3f of ideal); target max in flight %d", float64(n-workers*inflight)/r.results.span.Seconds(), steady, r.target.MaxInFlight)
	b.addRun("horizontal", fmt.Sprintf("%d×%d, %v", workers, inflight, lat), r, note)
	b.logf("  %.0f jobs/s = %.3f of %.0f (%s)", r.rate(), x, ideal, note)
	b.rows = append(b.rows, row{
		scenario: scenario,
		figure:   "jobs/s (N ÷ wall of `enqueue --wait`) vs 3·40/L",
		measured: fmt.Sprintf("%.0f jobs/s = **%.3f ×** %.0f", r.rate(), x, ideal),
		goal:     "≥ 0.9 ×",
		verdict:  verdict(x >= 0.9, fmt.Sprintf("%.1f %% under the bound", (1-x/0.9)*100)),
	})
	return nil
}

// memory: a worker holding 1,000 slow requests stays small.
func (b *bench) memory(ctx context.Context) error {
	const lat, inflight = time.Second, 1000
	n := b.scaled(5000, 2000)
	tgt, err := startTarget(ctx, b.binDir, "-latency", lat.String())
	if err != nil {
		return err
	}
	defer tgt.stop()
	b.logf("memory: %d jobs, %v, 1 worker × %d", n, lat, inflight)
	r, err := b.runJetpost(ctx, jpSpec{batch: "memory", n: n, workers: 1, env: inflightEnv(inflight), tgt: tgt})
	if err != nil {
		return err
	}
	if r.timedOut {
		b.unfinished(fmt.Sprintf("memory: %s jobs, %v target, 1 worker × %d", thousands(n), lat, inflight),
			"worker peak RSS (VmHWM)", "≤ 100 MB", fmt.Sprintf("1×%d, %v", inflight, lat), r)
		return nil
	}
	mb := float64(r.workerHWM) / 1e6
	// VmHWM, not rusage: a child's ru_maxrss also counts the pages it
	// shared with this (large) process between fork and exec.
	note := fmt.Sprintf("target max in flight %d", r.target.MaxInFlight)
	b.addRun("memory", fmt.Sprintf("1×%d, %v", inflight, lat), r, note)
	b.logf("  worker VmHWM %.1f MB (%s)", mb, note)
	b.rows = append(b.rows, row{
		scenario: fmt.Sprintf("memory: %s jobs, %v target, 1 worker × %d", thousands(n), lat, inflight),
		figure:   fmt.Sprintf("worker peak RSS (VmHWM); target saw %d in flight", r.target.MaxInFlight),
		measured: fmt.Sprintf("**%.1f MB**", mb),
		goal:     "≤ 100 MB",
		verdict:  verdict(mb <= 100 && r.target.MaxInFlight >= inflight*9/10, fmt.Sprintf("%.1f MB", mb)),
	})
	return nil
}

// isolation: host A failing must not starve host B (issue 3, item 2).
func (b *bench) isolation(ctx context.Context) error {
	const lat, inflight = 50 * time.Millisecond, 40
	n := b.scaled(4000, 400)
	env := append(inflightEnv(inflight), "JETPOST_REQUEST_TIMEOUT="+b.hangTimeout.String())
	tgtB, err := startTarget(ctx, b.binDir, "-latency", lat.String())
	if err != nil {
		return err
	}
	defer tgtB.stop()
	tgtA, err := startTarget(ctx, b.binDir, "-fail-rate", "1", "-fail-status", "503")
	if err != nil {
		return err
	}
	defer tgtA.stop()
	hang, err := startHangHost()
	if err != nil {
		return err
	}
	defer hang.stop()

	bg := func(batch, url string) func(string) (*proc, error) {
		return func(natsURL string) (*proc, error) {
			file, err := writeJobs(b.tmp, batch, batch, url, n)
			if err != nil {
				return nil, err
			}
			return b.startEnqueue(natsURL, file, batch, false)
		}
	}
	shape := fmt.Sprintf("1×%d, %v, timeout %v", inflight, lat, b.hangTimeout)

	b.logf("isolation: B alone, %d jobs", n)
	alone, err := b.runJetpost(ctx, jpSpec{batch: "isoB0", n: n, workers: 1, env: env, tgt: tgtB, readFull: true})
	if err != nil {
		return err
	}
	if alone.timedOut {
		b.unfinished("isolation: B alone", "B's jobs/s alone", "—", shape, alone)
		return nil
	}
	b.addRun("isolation: B alone", shape, alone, fmt.Sprintf("longest pause between B results %s", ms(alone.results.maxGap)))

	if err := tgtA.reset(); err != nil {
		return err
	}
	b.logf("isolation: B while A answers 503 to everything (%d A jobs enqueued alongside)", n)
	with503, err := b.runJetpost(ctx, jpSpec{batch: "isoB1", n: n, workers: 1, env: env, tgt: tgtB, readFull: true,
		background: bg("isoA1", tgtA.url)})
	if err != nil {
		return err
	}
	if with503.timedOut {
		b.unfinished("isolation: B with A 503", "B's jobs/s with A failing ÷ B alone", "≥ 0.8", shape, with503)
		return nil
	}
	stA, _ := tgtA.stats()
	r503 := with503.rate() / alone.rate()
	b.addRun("isolation: B with A 503", shape, with503, fmt.Sprintf("%.3f of alone; A saw %d requests for %d jobs; longest pause between B results %s",
		r503, stA.Requests, n, ms(with503.results.maxGap)))

	b.logf("isolation: B while A accepts connections and never answers")
	before := hang.accepted.Load()
	withHang, err := b.runJetpost(ctx, jpSpec{batch: "isoB2", n: n, workers: 1, env: env, tgt: tgtB, readFull: true,
		background: bg("isoA2", hang.url())})
	if err != nil {
		return err
	}
	if withHang.timedOut {
		b.unfinished("isolation: B with A hanging", "B's jobs/s with A hanging ÷ B alone", "≥ 0.6", shape, withHang)
		return nil
	}
	rHang := withHang.rate() / alone.rate()
	hangFirst := withHang.results.first.Sub(withHang.enq.p.start)
	aloneFirst := alone.results.first.Sub(alone.enq.p.start)
	b.addRun("isolation: B with A hanging", shape, withHang, fmt.Sprintf("%.3f of alone; A accepted %d connections for %d jobs; first B result %s after enqueue started (alone: %s); longest pause between B results after that %s",
		rHang, hang.accepted.Load()-before, n, ms(hangFirst), ms(aloneFirst), ms(withHang.results.maxGap)))
	b.logf("  B alone %.0f jobs/s; with A 503 %.0f (%.3f); with A hanging %.0f (%.3f)", alone.rate(), with503.rate(), r503, withHang.rate(), rHang)

	b.isolationRows(n, inflight, lat, alone, with503, withHang)
	return nil
}

// isolationRows adds the summary rows: B's rate beside each kind of broken
// A, against B alone.
func (b *bench) isolationRows(n, inflight int, lat time.Duration, alone, with503, withHang jpRun) {
	r503, rHang := with503.rate()/alone.rate(), withHang.rate()/alone.rate()
	b.isolationGoals(r503, rHang)
	hangFirst := withHang.results.first.Sub(withHang.enq.p.start)
	aloneFirst := alone.results.first.Sub(alone.enq.p.start)
	scen := fmt.Sprintf("isolation: %s jobs for B (%v) and %s for A, 1 worker × %d, `JETPOST_REQUEST_TIMEOUT=%v`, breaker defaults",
		thousands(n), lat, thousands(n), inflight, b.hangTimeout)
	b.rows = append(b.rows, row{
		scenario: scen + "; A answers 503",
		figure:   "B's jobs/s with A failing ÷ B alone (same run)",
		measured: fmt.Sprintf("**%.3f** (%.0f vs %.0f jobs/s)", r503, with503.rate(), alone.rate()),
		goal:     "≥ 0.8",
		verdict:  verdict(r503 >= 0.8, fmt.Sprintf("%.0f %% of the bound", r503/0.8*100)),
	}, row{
		scenario: scen + "; A accepts and never answers",
		figure:   "B's jobs/s with A hanging ÷ B alone (same run)",
		measured: fmt.Sprintf("**%.3f** (%.0f vs %.0f jobs/s; first B result after %s, alone %s)", rHang, withHang.rate(), alone.rate(), ms(hangFirst), ms(aloneFirst)),
		goal:     "≥ 0.6",
		verdict:  verdict(rHang >= 0.6, fmt.Sprintf("%.0f %% of the bound", rHang/0.6*100)),
	})
}

func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

// us is CPU time per item in microseconds.
func us(d time.Duration, n int) string {
	if n == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f µs", float64(d.Microseconds())/float64(n))
}

func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
