package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/jetpost/jetpost/internal/config"
)

// scaleFigures are the scale run's figures, as the goals table and the
// notes state them.
type scaleFigures struct {
	tenths                []float64
	steady                float64 // last tenth's rate ÷ first tenth's
	rssFirst, rssMedian   float64 // worker RSS, MB
	rssMax                float64
	slope, rise           float64 // MB per 100,000 results; fitted over the run
	brokerFirst, brokerMx float64 // the broker's (this process's) RSS, MB
	diskPeak              int64
	total                 time.Duration
	ackPendingPeak        uint64
	floorStuck            time.Duration // the longest the ack floor stood still
	floor                 uint64        // where it stood
}

// figures computes the scale run's figures from its samples and results.
// RSS counts from the first result on; the trend is fitted on the samples
// after the first tenth (start-up: pools, buffers and caches filling).
func (r *scaleRun) figures() scaleFigures {
	var f scaleFigures
	f.tenths = tenthRates(r.res.times)
	if len(f.tenths) == 10 && f.tenths[0] > 0 {
		f.steady = f.tenths[9] / f.tenths[0]
	}
	var rss, x, y []float64
	var floor uint64
	var floorSince time.Time
	for _, s := range r.samples {
		f.diskPeak = max(f.diskPeak, s.disk)
		f.ackPendingPeak = max(f.ackPendingPeak, s.ackPending)
		if s.consumer {
			if s.ackFloor != floor || floorSince.IsZero() {
				floor, floorSince = s.ackFloor, s.at
			}
			// The longest the floor stood still: a job parked again and
			// again while later ones finish.
			if d := s.at.Sub(floorSince); d >= f.floorStuck {
				f.floorStuck, f.floor = d, floor
			}
		}
		if s.results == 0 {
			continue
		}
		m := float64(s.workerRSS) / 1e6
		rss = append(rss, m)
		f.brokerMx = max(f.brokerMx, float64(s.brokerRSS)/1e6)
		if f.brokerFirst == 0 {
			f.brokerFirst = float64(s.brokerRSS) / 1e6
		}
		if s.results >= uint64(r.n/10) && s.results < uint64(r.n) {
			x = append(x, float64(s.results))
			y = append(y, m)
		}
	}
	if len(rss) > 0 {
		f.rssFirst, f.rssMedian = rss[0], median(rss)
		for _, v := range rss {
			f.rssMax = max(f.rssMax, v)
		}
	}
	if slope, span, ok := linearFit(x, y); ok {
		f.slope, f.rise = slope*100_000, slope*span
	}
	if len(r.res.times) > 0 {
		f.total = time.Unix(0, r.res.times[len(r.res.times)-1]).Sub(r.start)
	}
	return f
}

// rssFlat: no upward trend worth the name, a fitted rise over the run of at
// most a tenth of the median.
func (f scaleFigures) rssFlat() bool { return f.rise <= 0.1*f.rssMedian }

func (b *bench) scaleRows(r *scaleRun) {
	f := r.figures()
	n := r.n
	rate := float64(len(r.res.times)) / f.total.Seconds()
	b.logf("  %s results in %s (%.0f jobs/s); last tenth ÷ first %.3f; worker RSS %.1f / %.1f / %.1f MB, %+.2f MB per 100k; store peak %s, end %s; enqueue results %s",
		thousands(n), ms(f.total), rate, f.steady, f.rssFirst, f.rssMedian, f.rssMax, f.slope, mb(f.diskPeak), mb(r.diskEnd), ms(r.readBack.wall))
	shape := fmt.Sprintf("%d×%d, 0 ms", r.workers, scaleInflight)
	d := detail{name: "scale", n: n, shape: shape, wall: f.total, rate: rate,
		workerCPU: r.cpu.workerCPU, enqCPU: r.enq.cpu, natsCPU: r.cpu.natsCPU, tgtCPU: r.cpu.targetCPU,
		rss: int64(f.rssMax * 1e6), maxInFl: r.cpu.target.MaxInFlight, others: r.cpu.otherLoad,
		note: fmt.Sprintf("enqueue published all after %s (peak RSS %s); broker RSS %.0f → %.0f MB; %.2f host-limit refusals (delayed NAKs) per job",
			ms(r.enq.publish), mb(r.enqHWM), f.brokerFirst, f.brokerMx, r.refused/float64(n))}
	b.details = append(b.details, d)

	item := fmt.Sprintf("4. steady at scale (%s jobs, %s)", thousands(n), shape)
	res := r.res
	one := res.distinct == n && res.duplicates == 0 && res.foreign == 0
	oneWhy := res.problem(n)
	if r.timedOut {
		item += fmt.Sprintf(", **stopped by -scale-deadline %s**", b.scaleDeadline)
		oneWhy = fmt.Sprintf("did not finish: %s of %s results after %s, none twice", thousands(res.distinct), thousands(n), ms(r.done.Sub(r.start)))
	}
	// What the workers may hold at once, by the worker's own rule (the
	// scenario sets JETPOST_MAX_INFLIGHT alone).
	window := r.workers * (&config.Worker{MaxInflight: scaleInflight}).Window()
	b.goals = append(b.goals, goal{
		item: item, what: "exactly one result per job (results stream read message by message)",
		jetpost: fmt.Sprintf("%s distinct, %d second, %d missing, %d foreign; %s ok", thousands(res.distinct), res.duplicates, n-res.distinct, res.foreign, thousands(res.ok)),
		target:  "one each", verdict: verdict(one, oneWhy),
	}, goal{
		item: item, what: fmt.Sprintf("the batch's consumer: jobs delivered and not acked, peak (the workers hold at most %d; the rest are parked by delayed NAKs); the longest its ack floor stood still", window),
		jetpost: fmt.Sprintf("%s; %s (ack floor at stream seq %s)%s", thousands(int(f.ackPendingPeak)), ms(f.floorStuck), thousands(int(f.floor)), oldestNote(r.oldest)),
		target:  fmt.Sprintf("≤ %d", window), verdict: verdict(f.ackPendingPeak <= uint64(window), fmt.Sprintf("%s parked", thousands(int(f.ackPendingPeak)-window))),
	}, goal{
		item: item, what: "rate of the last tenth of the results ÷ the first tenth",
		jetpost: fmt.Sprintf("**%.3f** (%.0f vs %.0f jobs/s)", f.steady, tenth(f.tenths, 9), tenth(f.tenths, 0)),
		target:  "0.9–1.1", verdict: verdict(f.steady >= 0.9 && f.steady <= 1.1, fmt.Sprintf("%.0f %% off", 100*(f.steady-1))),
	}, goal{
		item: item, what: "worker RSS first / median / max; trend fitted after the first tenth",
		jetpost: fmt.Sprintf("%.1f / %.1f / %.1f MB; **%+.2f MB per 100,000 jobs** (%+.1f MB over the run)", f.rssFirst, f.rssMedian, f.rssMax, f.slope, f.rise),
		target:  "flat: rise ≤ 10 % of median", verdict: verdict(f.rssFlat(), fmt.Sprintf("rises %.1f MB", f.rise)),
	}, goal{
		item: item, what: "broker store on disk, peak / end; `enqueue results` of the whole batch; total (enqueue start → last result)",
		jetpost: fmt.Sprintf("%s / %s; %s; %s", mb(f.diskPeak), mb(r.diskEnd), r.readBack.String(), ms(f.total)),
		target:  "reported", verdict: "—",
	})
	b.notes = append(b.notes, r.note(f))
	b.headline.scale = fmt.Sprintf("%.3f; %+.2f MB per 100k jobs", f.steady, f.slope)
}

func tenth(t []float64, i int) float64 {
	if i < len(t) {
		return t[i]
	}
	return 0
}

// note is the scale run's paragraph under the tables: the rate of every
// tenth, and what each stream and bucket held at the end.
func (r *scaleRun) note(f scaleFigures) string {
	var s strings.Builder
	fmt.Fprintf(&s, "Scale run (%s jobs): results per second by tenth of the results:", thousands(r.n))
	for _, t := range f.tenths {
		fmt.Fprintf(&s, " %.0f", t)
	}
	fmt.Fprintf(&s, ". Read back message by message in %s. Streams and buckets at the end:", ms(r.res.took))
	for i, u := range r.streams {
		if i > 0 {
			s.WriteString(",")
		}
		fmt.Fprintf(&s, " %s %s msgs / %s", u.name, thousands(int(u.msgs)), mb(int64(u.bytes)))
	}
	s.WriteString(".")
	return s.String()
}

func oldestNote(s string) string {
	if s == "" {
		return ""
	}
	return "; oldest job left: " + s
}

func (rb readBack) String() string {
	if rb.wall == 0 {
		return "`enqueue results` not run (unfinished batch)"
	}
	return fmt.Sprintf("%s (%.0f results/s, peak RSS %s)", ms(rb.wall), float64(rb.lines)/rb.wall.Seconds(), mb(rb.hwm))
}
