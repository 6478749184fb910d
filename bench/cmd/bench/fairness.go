package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// The fairness scenario (issue 15): batches share the workers. One worker
// and one target; a small batch alone (the yardstick), the same small
// batch enqueued while a large one drains, and many small batches enqueued
// at once. Times come from the results stream (when each result was
// stored) and from the enqueue processes (start, exit).

const (
	fairLat      = 50 * time.Millisecond
	fairInflight = 40
	// fairLead is how long the large batch runs alone before the small one
	// is enqueued: long enough to measure its rate alone.
	fairLead = 3 * time.Second
)

// fairBatch is one batch of the scenario: its enqueue --wait process and
// the results stored for it.
type fairBatch struct {
	enq enqueueRun
	res resultStats
}

// firstResult is how long after its last job was published the batch's
// first result was stored: process start-up (a hundred at once on two
// cores take seconds) is not the workers' doing.
func (f fairBatch) firstResult() time.Duration { return f.res.first.Sub(f.published()) }

// published is when enqueue said every job was published.
func (f fairBatch) published() time.Time { return f.enq.p.start.Add(f.enq.publish) }

// fairEnv is one fairness run's broker, worker and target.
type fairEnv struct {
	b   *bench
	br  *broker
	tgt *demoTarget
}

func (b *bench) fairness(ctx context.Context) error {
	nLarge, nSmall := b.scaled(20000, 2000), 200
	nMany, manyJobs := b.scaled(100, 20), 50
	tgt, err := startTarget(ctx, b.binDir, "-latency", fairLat.String())
	if err != nil {
		return err
	}
	defer tgt.stop()
	br, err := startBroker(b.tmp)
	if err != nil {
		return err
	}
	defer br.stop()
	ws, err := b.startWorkers(ctx, br.URL, 1, inflightEnv(fairInflight))
	defer stopWorkers(ws)
	if err != nil {
		return err
	}
	e := &fairEnv{b: b, br: br, tgt: tgt}
	b.logf("fairness: %d jobs alone, then behind %d, then %d batches of %d at once; %v, 1 worker × %d", nSmall, nLarge, nMany, manyJobs, fairLat, fairInflight)
	alone, err := e.run(ctx, "fair-alone", nSmall)
	if err != nil {
		return err
	}
	large, small, err := e.behind(ctx, nLarge, nSmall)
	if err != nil {
		return err
	}
	b.fairnessRows(nLarge, nSmall, alone, large, small)
	cpu0, _ := procCPU(ws[0].p.pid())
	many, err := e.many(ctx, nMany, manyJobs)
	if err != nil {
		return err
	}
	cpu1, _ := procCPU(ws[0].p.pid())
	b.manyRows(nMany, manyJobs, many, cpu1-cpu0)
	return nil
}

// run enqueues n jobs of batch and waits for their results.
func (e *fairEnv) run(ctx context.Context, batch string, n int) (fairBatch, error) {
	p, err := e.start(batch, n)
	if err != nil {
		return fairBatch{}, err
	}
	return e.finish(ctx, p, batch, n, true)
}

func (e *fairEnv) start(batch string, n int) (*proc, error) {
	file, err := writeJobs(e.b.tmp, batch, batch, e.tgt.url, n)
	if err != nil {
		return nil, err
	}
	return e.b.startEnqueue(e.br.URL, file, batch, true)
}

// finish waits for p, then reads the batch's results back: all of them
// when full, else only the first and last (their times).
func (e *fairEnv) finish(ctx context.Context, p *proc, batch string, n int, full bool) (fairBatch, error) {
	// FIFO dispatch makes a small batch behind 20,000 jobs wait about 25 s.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var f fairBatch
	var err error
	if f.enq, err = finishEnqueue(wctx, p); err != nil {
		return f, err
	}
	if f.res, err = e.br.readResults(ctx, batch, full); err != nil {
		return f, err
	}
	if f.enq.exit != 0 || f.res.stored != uint64(n) || (full && f.res.ok != n) {
		return f, fmt.Errorf("%s: exit %d, %d results stored, %d ok (read in full: %v), for %d jobs", batch, f.enq.exit, f.res.stored, f.res.ok, full, n)
	}
	return f, nil
}

// behind runs a large batch, and a small one enqueued fairLead after the
// large one is published (publishing it may take seconds on a busy
// machine; a small batch published meanwhile would be interleaved with it,
// even in a FIFO).
func (e *fairEnv) behind(ctx context.Context, nLarge, nSmall int) (large, small fairBatch, err error) {
	lp, err := e.start("fair-large", nLarge)
	if err != nil {
		return large, small, err
	}
	if err := waitPublished(ctx, lp); err != nil {
		return large, small, err
	}
	select {
	case <-time.After(fairLead):
	case <-ctx.Done():
		return large, small, ctx.Err()
	}
	if small, err = e.run(ctx, "fair-small", nSmall); err != nil {
		return large, small, err
	}
	large, err = e.finish(ctx, lp, "fair-large", nLarge, true)
	return large, small, err
}

// waitPublished waits until enqueue says every job is published.
func waitPublished(ctx context.Context, p *proc) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for p.lineAt(" published in ").IsZero() {
		select {
		case <-tick.C:
		case <-p.done:
			return fmt.Errorf("%s exited before publishing: %v\n%s", p.name, p.err, p.output())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// many enqueues n batches of jobs each at once, as n processes.
func (e *fairEnv) many(ctx context.Context, n, jobs int) ([]fairBatch, error) {
	ps := make([]*proc, n)
	for i := range n {
		var err error
		if ps[i], err = e.start(fmt.Sprintf("fair-many%03d", i), jobs); err != nil {
			return nil, err
		}
	}
	out := make([]fairBatch, n)
	var errs []error
	for i, p := range ps {
		var err error
		// First and last result only: the times are all this needs.
		out[i], err = e.finish(ctx, p, fmt.Sprintf("fair-many%03d", i), jobs, false)
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// countBetween counts the times in [from, to].
func countBetween(times []time.Time, from, to time.Time) int {
	n := 0
	for _, t := range times {
		if !t.Before(from) && !t.After(to) {
			n++
		}
	}
	return n
}

// rateBetween is results per second in [from, to].
func rateBetween(times []time.Time, from, to time.Time) float64 {
	d := to.Sub(from).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(countBetween(times, from, to)) / d
}

// fairnessRows reports the small batch behind the large one against
// alone, and the large batch's rate beside it against alone.
func (b *bench) fairnessRows(nLarge, nSmall int, alone, large, small fairBatch) {
	scen := fmt.Sprintf("fairness: %s jobs enqueued %v after %s were published, %v, 1 worker × %d", thousands(nSmall), fairLead, thousands(nLarge), fairLat, fairInflight)
	ratio := small.enq.wall.Seconds() / alone.enq.wall.Seconds()
	// The large batch alone: from a second after its first result to the
	// small batch's enqueue; beside it: while the small batch's results came.
	lt := large.res.times
	aloneRate := rateBetween(lt, large.res.first.Add(time.Second), small.enq.p.start)
	if !large.published().Before(small.enq.p.start) {
		b.logf("  the large batch was still publishing when the small one started: the figures below mean little")
	}
	besideRate := rateBetween(lt, small.res.first, small.res.last)
	share := besideRate / aloneRate
	win := small.res.last.Sub(small.res.first).Seconds()
	total := float64(countBetween(lt, small.res.first, small.res.last)+nSmall) / win / aloneRate
	idealLarge := time.Duration(nLarge+nSmall) * fairLat / fairInflight
	b.logf("  small alone %s, behind %s (%.2f ×), first result %s vs %s; large %.0f jobs/s alone, %.0f beside (%.3f), all %.3f",
		ms(alone.enq.wall), ms(small.enq.wall), ratio, ms(small.firstResult()), ms(alone.firstResult()), aloneRate, besideRate, share, total)
	b.rows = append(b.rows, row{
		scenario: scen, figure: "small batch's wall time behind the large one ÷ alone (2 batches of equal weight: 2 × is fair)",
		measured: fmt.Sprintf("**%.2f ×** (%s vs %s)", ratio, ms(small.enq.wall), ms(alone.enq.wall)),
		goal:     "≤ 3 ×", verdict: verdict(ratio <= 3, fmt.Sprintf("%.1f ×", ratio)),
	}, row{
		scenario: scen, figure: "small batch's first result after its jobs were published, behind the large one (alone)",
		measured: fmt.Sprintf("**%s** (%s)", ms(small.firstResult()), ms(alone.firstResult())),
		goal:     "≤ 1.5 s", verdict: verdict(small.firstResult() <= 1500*time.Millisecond, ms(small.firstResult())),
	}, row{
		scenario: scen, figure: "large batch's jobs/s while the small one ran ÷ alone (its fair share: 0.5)",
		measured: fmt.Sprintf("**%.3f** (%.0f vs %.0f jobs/s; both batches together %.3f of alone; the large batch's wall %.3f × ideal (N+n)·L/P)",
			share, besideRate, aloneRate, total, large.enq.wall.Seconds()/idealLarge.Seconds()),
		goal:    "≥ 0.45 (90 % of its share), both ≥ 0.9",
		verdict: verdict(share >= 0.45 && total >= 0.9, fmt.Sprintf("%.3f, both %.3f", share, total)),
	})
}

// manyRows reports n batches enqueued at once: when each got its first
// result and finished, the rate of all together, and the worker's CPU.
func (b *bench) manyRows(n, jobs int, many []fairBatch, workerCPU time.Duration) {
	var first, done []time.Duration
	began, ended := many[0].enq.p.start, many[0].res.last
	for _, f := range many {
		first = append(first, f.firstResult())
		done = append(done, f.enq.wall)
		began = minTime(began, f.enq.p.start)
		ended = maxTime(ended, f.res.last)
	}
	rate := float64(n*jobs) / ended.Sub(began).Seconds()
	sort.Slice(first, func(i, j int) bool { return first[i] < first[j] })
	sort.Slice(done, func(i, j int) bool { return done[i] < done[j] })
	ideal := time.Duration(n*jobs) * fairLat / fairInflight
	b.logf("  %d batches at once: first result median %s, max %s; done median %s, max %s (all jobs ideally %s); %.0f jobs/s; worker CPU %s/job",
		n, ms(first[n/2]), ms(first[n-1]), ms(done[n/2]), ms(done[n-1]), ms(ideal), rate, us(workerCPU, n*jobs))
	b.rows = append(b.rows, row{
		scenario: fmt.Sprintf("fairness: %d batches of %d jobs enqueued at once (%d processes), %v, 1 worker × %d", n, jobs, n, fairLat, fairInflight),
		figure:   fmt.Sprintf("each batch's first result after its jobs were published, median / max; each batch's `enqueue --wait` wall, median / max (every job ideally done after %s)", ms(ideal)),
		measured: fmt.Sprintf("first **%s / %s**; done %s / %s; all together %.0f jobs/s (%.3f of P/L), worker CPU %s/job",
			ms(first[n/2]), ms(first[n-1]), ms(done[n/2]), ms(done[n-1]), rate, rate*fairLat.Seconds()/fairInflight, us(workerCPU, n*jobs)),
		goal: "max first ≤ 1.5 s", verdict: verdict(first[n-1] <= 1500*time.Millisecond, ms(first[n-1])),
	})
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
