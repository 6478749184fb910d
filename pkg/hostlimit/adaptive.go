package hostlimit

import (
	"net/http"
	"time"

	"github.com/jetpost/jetpost/pkg/sender"
)

// adaptive is one host's concurrency limit, found by probing: AIMD driven
// by the host's own signals, with a latency guard in the manner of TCP
// Vegas and Netflix's gradient limiters.
//
//   - Grow while the limit is in use and answers come back fine: by one per
//     answer at first (slow start: doubling every round trip, so a fast host
//     is found within a few round trips), then by 1/limit per answer (about
//     one per round trip), so the limit creeps towards the edge instead of
//     jumping over it; near the limit where the host last pushed back
//     (±5%, at least ±1), at a quarter of that pace times a gain that
//     halves while the host pushes back within 20 round trips of the last
//     time, and doubles back after as many without.
//   - Shrink multiplicatively (×Backoff) on 429, 503 or a timeout, and when
//     the recent latency rises above Tolerance × the host's baseline
//     latency, and by more than 10 ms (queueing at the host, before it
//     starts refusing; smaller rises are noise). At most
//     once per round trip: answers to requests sent before the last cut
//     were sent under the old limit and say nothing about the new one.
//     A 429 within that round trip holds the limit to what is still in
//     flight, and every 429 holds its slot for a latency (hostState.held).
//   - Don't grow while the host is not the bottleneck (fewer than half the
//     limit in flight): a limit that is never reached has not been tested.
//
// Against a host that refuses above C concurrent requests with flat
// latency, the limit saws between about Backoff×C and C+1, spending one
// refused request per cycle of several round trips. Several workers
// sharing the host each probe it; without the gain, the host refused
// several times as often (5% of requests with three workers, in the fleet
// simulation of fleet429_test.go), and without the holds a host that
// refuses at once saw a storm of requests.
type adaptive struct {
	limit     float64
	min, max  float64
	backoff   float64
	tolerance float64
	slowStart bool
	lastCut   time.Time
	lastMax   float64 // the limit when the host last pushed back
	// gain scales the growth near lastMax (1, down to minGain): halved when
	// the host pushed back again within cycle(), doubled after as long
	// without. Workers sharing a host each add their growth to its load, so
	// it would push back as many times as often; each one's gain falls until
	// cuts are about as rare as for one worker, whatever their number (which
	// none of them knows). Far from lastMax the pace is the usual one, so a
	// worker that was cut far down, or finds room others left, is not slowed.
	gain   float64
	gainAt time.Time // when gain last rose
	// peak is the highest limit grown to since peakSince, prevPeak the
	// window's before: what the host took lately, whatever cuts came
	// since (a worker starved of CPU reads queueing into its latencies and
	// cuts its limit down to 1, and must not pace its line of refused jobs
	// on that).
	peak, prevPeak float64
	peakSince      time.Time

	// short is a fast moving average of latency (about the last 20
	// answers); base is the lowest it has been lately: the host's latency
	// without our queue, kept over two rotating windows so that it follows
	// a host that became slower for everyone.
	samples        int
	short          float64 // seconds
	base, prevBase float64
	baseSince      time.Time
}

const (
	// cycleRoundTrips is how many of the host's latencies one cycle of the
	// sawtooth should last at least (with a limit of 10, one 429 in about
	// 200 requests); minGain bounds how slowly the limit creeps.
	cycleRoundTrips = 20
	minGain         = 1.0 / 16

	// nearMax and nearMaxGrowth: within ±5% of the limit at which the host
	// last pushed back, grow at a quarter of the usual pace (as TCP BIC and
	// CUBIC flatten near the last maximum). Beyond it the host has more
	// room than before, and the usual pace resumes.
	nearMax       = 0.05
	nearMaxGrowth = 0.25

	shortAlpha = 0.05
	// minSamples answers before latency is trusted for decisions.
	minSamples = 20
	// baseWindow is how long a baseline latency is remembered.
	baseWindow = 30 * time.Second
	// peakWindow is how long the highest limit is remembered, for pacing.
	peakWindow = 10 * time.Second
	// minLatencyRise: a rise in latency smaller than this is not taken for
	// queueing, whatever the ratio. A host answering in 300 µs is "twice as
	// slow" after one garbage collection or a busy scheduler; cutting its
	// limit for that collapsed a fast host to one request at a time.
	minLatencyRise = 10 * time.Millisecond
)

func newAdaptive(initial, maxLimit int, backoff, tolerance float64) *adaptive {
	return &adaptive{
		limit: float64(initial), min: 1, max: float64(maxLimit),
		backoff: backoff, tolerance: tolerance, slowStart: true, gain: 1,
	}
}

// current is the whole number of requests allowed in flight.
func (a *adaptive) current() int { return max(1, int(a.limit)) }

// latency is the recent latency, or def when too few answers came back to
// tell.
func (a *adaptive) latency(def time.Duration) time.Duration {
	if a.samples < minSamples {
		return def
	}
	return time.Duration(a.short * float64(time.Second))
}

// observe learns from one finished request that started at start with
// inflight requests (itself included) outstanding to the host; busy are
// still outstanding now that it is done.
func (a *adaptive) observe(fb sender.Feedback, start time.Time, inflight, busy int, now time.Time) {
	if !fb.Sent || fb.Canceled {
		return
	}
	a.rotatePeak(now)
	if fb.Overloaded() {
		if !a.cut(start, now) && fb.Status == http.StatusTooManyRequests {
			// Refused again within the round trip after a cut: the host
			// is full with what is in flight now, and a request sent in
			// this one's place would be refused at once too (a host
			// answering 429 instantly would see a storm of them until the
			// round trip ends). Wait for a good answer first.
			a.limit = max(a.min, min(a.limit, float64(busy)))
		}
		return
	}
	if fb.Failed || fb.Status >= 500 {
		// Down or broken rather than busy: the breaker's business.
		return
	}
	a.sample(fb.Latency.Seconds(), now)
	if a.samples >= minSamples && a.short > a.tolerance*a.baseline() && a.short-a.baseline() > minLatencyRise.Seconds() {
		a.cut(start, now)
		return
	}
	if cycle := a.cycle(); cycle > 0 && now.Sub(a.lastCut) >= cycle && now.Sub(a.gainAt) >= cycle {
		a.gain, a.gainAt = min(1, 2*a.gain), now
	}
	if float64(inflight)*2 < a.limit {
		return
	}
	a.grow()
	if !a.slowStart {
		// Slow start overshoots the host by up to half: not a limit it took.
		a.peak = max(a.peak, a.limit)
	}
}

// rotatePeak starts a new window of the highest limit when the current one
// is peakWindow old, so that the peak is the highest of the last 10–20 s
// (as the baseline latency's two windows).
func (a *adaptive) rotatePeak(now time.Time) {
	if now.Sub(a.peakSince) > peakWindow {
		a.prevPeak, a.peak, a.peakSince = a.peak, 0, now
	}
}

// recentPeak is the highest limit grown to in the last one or two
// peakWindows.
func (a *adaptive) recentPeak() float64 { return max(a.peak, a.prevPeak) }

// grow raises the limit after a good answer that tested it.
func (a *adaptive) grow() {
	// Near: within ±5% of it, and at least ±1 (a small limit's 5% is
	// less than one request).
	near := max(a.lastMax*nearMax, 1)
	switch {
	case a.slowStart:
		a.limit++
	case a.limit >= a.lastMax+near:
		// Past where the host last pushed back: it has more room than
		// before (a worker sharing it left), so the usual pace resumes.
		a.gain = 1
		a.limit += 1 / a.limit
	case a.limit > a.lastMax-near:
		// Close to where the host last pushed back: probe slowly, so the
		// refusal that ends each cycle comes once in many round trips.
		a.limit += a.gain * nearMaxGrowth / a.limit
	default:
		a.limit += 1 / a.limit
	}
	a.limit = min(a.limit, a.max)
}

// cut shrinks the limit for an overload signal about a request sent at
// start, unless it was sent before the last cut; it reports whether it did.
func (a *adaptive) cut(start, now time.Time) bool {
	if start.Before(a.lastCut) {
		return false
	}
	if cycle := a.cycle(); !a.slowStart && now.Sub(a.lastCut) < cycle {
		a.gain = max(minGain, a.gain/2)
	}
	a.slowStart = false
	a.lastMax = a.limit
	a.limit = max(a.min, a.limit*a.backoff)
	a.lastCut = now
	return true
}

func (a *adaptive) sample(lat float64, now time.Time) {
	a.samples++
	if a.samples == 1 {
		a.short = lat
	} else {
		a.short += shortAlpha * (lat - a.short)
	}
	if a.samples < minSamples {
		return
	}
	if a.baseSince.IsZero() || now.Sub(a.baseSince) > baseWindow {
		a.prevBase, a.base, a.baseSince = a.base, a.short, now
	}
	a.base = min(a.base, a.short)
}

// cycle is the shortest a cycle of the sawtooth should last (see gain):
// cycleRoundTrips of the host's latency; 0 while that is unknown.
func (a *adaptive) cycle() time.Duration {
	return cycleRoundTrips * a.baseLatency()
}

// holdTime is how long the slot of a request refused at once stays taken:
// about one of the host's requests' latency, by which one of them will have
// finished; latencyGuess until the host's latency is known.
func (a *adaptive) holdTime() time.Duration {
	if lat := a.baseLatency(); lat > 0 {
		return lat
	}
	return latencyGuess
}

// baseLatency is the host's latency without our queue (0 until enough
// answers came back to tell).
func (a *adaptive) baseLatency() time.Duration {
	if a.samples < minSamples {
		return 0
	}
	return time.Duration(a.baseline() * float64(time.Second))
}

func (a *adaptive) baseline() float64 {
	if a.prevBase > 0 {
		return min(a.base, a.prevBase)
	}
	return a.base
}
