package hostlimit

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jetpost/jetpost/pkg/sender"
)

const (
	// waitersPerSlot and waitLatencies size a host's share of the waiting
	// buffer: up to six requests per slot, each waiting at most eight
	// latencies (and MaxWait). JetStream hands parked jobs back in bursts,
	// with pauses of 100 ms and more between them while acknowledgements
	// stream in and more than a thousand jobs are parked; the buffer
	// carries the host's slots through such pauses; BENCHMARKS.md has the
	// sizes that were measured.
	waitersPerSlot = 6
	waitLatencies  = 8
	// latencyGuess stands in for a host's latency until answers tell.
	latencyGuess = 100 * time.Millisecond
	// overbookConcurrency spreads refused jobs' returns a little faster
	// than the host's estimated throughput (per process), so a free slot
	// rarely waits for a job; the waiting buffer absorbs the surplus, the
	// rest is parked again. Not more: a steady stream of delayed NAKs holds
	// up JetStream's redeliveries (each one pushes the consumer's
	// redelivery timer 10 ms out), so parking jobs again and again would
	// slow every deferred job of the fleet.
	overbookConcurrency = 1.25
)

// acquireSlot reserves one of h's slots, waiting for one in the buffer if
// it may, or returns the refusal. l.mu is held on entry and on return.
func (l *Limiter) acquireSlot(ctx context.Context, h *hostState, now time.Time) error {
	l.grantWaiters(h, now) // slots held after a 429 may be due back
	if h.room(now) && len(h.waiters) == 0 {
		h.occupy(now)
		return nil
	}
	maxWait, ok := l.mayWait(h, now)
	if !ok {
		return l.refuseConcurrency(h, now)
	}
	w := make(chan struct{}, 1)
	h.waiters = append(h.waiters, w)
	l.waiting++
	l.mu.Unlock()
	err := l.awaitSlot(ctx, h, w, maxWait)
	l.mu.Lock()
	return err
}

// mayWait reports whether a request for h may wait here for a slot, and
// for how long. l.mu is held.
func (l *Limiter) mayWait(h *hostState, now time.Time) (time.Duration, bool) {
	perHost, buffer := waitersPerSlot*h.limit(), l.cfg.MaxWaiting
	lat := h.conc.latency(0)
	var wait time.Duration
	switch fast := int(float64(h.limit()) * float64(fastHostWait) / float64(max(lat, 1))); {
	case lat == 0:
		// A host that has not answered yet may be one that never will:
		// wait little, and for few slots.
		perHost, lat = h.limit()/2, latencyGuess
		wait = min(l.cfg.MaxWait, lat)
	case fast > perHost:
		// A fast host serves many more than six requests per slot within
		// fastHostWait: as many may wait as it would serve by then, each
		// for up to MaxWait (its slots free only as fast as this process
		// reads the answers, slower than Little's law says when the CPU
		// is short), in a buffer FastWaiting larger. Parked instead, each
		// would cost a delayed NAK and a redelivery, more than the request.
		perHost, wait, buffer = fast, l.cfg.MaxWait, buffer+l.cfg.FastWaiting
	default:
		wait = min(l.cfg.MaxWait, waitLatencies*lat)
	}
	if l.waiting >= buffer || len(h.waiters) >= perHost {
		return 0, false
	}
	if h.stalled(now) > max(2*lat, fastHostWait) {
		// The host is not answering: waiting would only hold the slot. Not
		// sooner: a fast host's answers stop for a few milliseconds
		// whenever this process is descheduled.
		return 0, false
	}
	return wait, true
}

// fastHostWait sizes a known host's waiting line by what it serves in this
// time, and is the least stall that stops new requests from waiting: a host
// answering in a millisecond frees a slot many times within it, and stops
// answering for a few milliseconds whenever this process is descheduled.
const fastHostWait = 100 * time.Millisecond

// awaitSlot waits until release hands w a slot, up to maxWait. It returns
// nil with the slot reserved, or the refusal.
func (l *Limiter) awaitSlot(ctx context.Context, h *hostState, w chan struct{}, maxWait time.Duration) error {
	t := time.NewTimer(maxWait)
	defer t.Stop()
	var err error
	select {
	case <-w:
		return nil
	case <-t.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.grantWaiters(h, l.cfg.Now()) // slots held after a 429 may be due back
	}
	select {
	case <-w:
		// Handed a slot just as the wait ended: take it, unless the
		// caller is gone.
		if err == nil {
			return nil
		}
		h.inflight--
		l.grantWaiters(h, l.cfg.Now())
		return err
	default:
	}
	if i := slices.Index(h.waiters, w); i >= 0 {
		h.waiters = slices.Delete(h.waiters, i, i+1)
		l.waiting--
	}
	if err != nil {
		return err
	}
	return l.refuseConcurrency(h, l.cfg.Now())
}

// refuseConcurrency counts and schedules a refusal. l.mu is held. The
// reason names the latency the line is paced on: a latency longer than any
// request took would be a pace read off something else (an idle gap, say).
func (l *Limiter) refuseConcurrency(h *hostState, now time.Time) error {
	h.refused++
	wait, lat := l.concurrencyWait(h, now)
	return &sender.NotAdmittedError{Host: h.key, Wait: wait, AtCeiling: h.limit() >= l.cfg.MaxInflight,
		Reason: fmt.Sprintf("concurrency limit %d reached; paced on a latency of %v", h.limit(), lat)}
}

// grantWaiters hands free slots of h to its waiters, first come first
// served. l.mu is held.
func (l *Limiter) grantWaiters(h *hostState, now time.Time) {
	for len(h.waiters) > 0 && h.room(now) {
		w := h.waiters[0]
		h.waiters = slices.Delete(h.waiters, 0, 1)
		l.waiting--
		h.occupy(now)
		w <- struct{}{}
	}
}

// concurrencyWait schedules a job refused for concurrency. Refused jobs
// form a line, spaced at a little faster than the pace at which the host's
// slots free up, by Little's law limit ÷ latency, so that they come back
// about when there is room instead of all at once; one that comes back and
// still finds no room goes to the back of the line again. Returns thus
// never come much faster than the host can take them, which keeps the
// delayed NAKs, and JetStream's work, to about one per job. It also returns
// the latency the pace was taken from. l.mu is held.
func (l *Limiter) concurrencyWait(h *hostState, now time.Time) (wait, lat time.Duration) {
	lat, limit, known := l.linePace(h, now)
	if !known {
		// Too few answers to know the host's pace (its first round trips):
		// come back soon and be scheduled then, rather than parked for
		// long on a guess. A host that hangs makes the waits grow.
		return min(l.jitter(lat), l.cfg.MaxDefer), lat
	}
	return l.schedule(&h.cursor, now, lineSpacing(lat, limit)), lat
}

// linePace is the latency and the limit that h's line of refused jobs is
// paced on; known is false while the host's latency is not (lat is then a
// guess). l.mu is held.
func (l *Limiter) linePace(h *hostState, now time.Time) (lat time.Duration, limit float64, known bool) {
	stalled := h.stalled(now)
	lat = h.conc.baseLatency()
	if lat == 0 {
		return max(latencyGuess, stalled), 0, false
	}
	// The pace is taken optimistically, at the host's best lately (its
	// baseline latency, ownPace's limit, the fleet's average limit when
	// workers share the host): jobs parked on a pessimistic guess after a
	// hiccup would come back too slowly for a host that recovered, and
	// leave its slots idle; jobs that come back too early are only parked
	// again. A host that stops answering (for twice its latency and
	// stallPace) slows the pace down; a shorter stall is as often this
	// process starved of CPU, and the line's end, pushed out by it, stayed
	// out after the stall (BENCHMARKS.md, issue 17).
	if stalled > max(2*lat, stallPace) {
		lat = stalled
	}
	limit = h.ownPace()
	if h.fixed == 0 && h.conc.slowStart {
		// Still doubling every round trip, with no sign yet of where
		// it stops: the pace may be anything up to the ceiling. Jobs
		// lined up for today's limit would come back a round trip per
		// doubling too late: a host answering in 1 s, its limit on the
		// way from 20 to 1,000, had 5,000 jobs parked up to two
		// minutes out and sent 40 a second.
		limit = h.conc.max
	}
	return lat, max(limit, l.fleetAvg(h, now)), true
}

// stallPace: a host that owes an answer for longer than this (and twice
// its latency) is taken to be slow, for the pace of its line.
const stallPace = time.Second

// lineSpacing is the spacing of a line of refused jobs for a host that
// answers in lat with limit requests in flight.
func lineSpacing(lat time.Duration, limit float64) time.Duration {
	return time.Duration(float64(lat) / limit / overbookConcurrency)
}

// pace books a place in h's line of refused jobs for a job that h
// answered 429, as if its limit had refused it, rather than leave it to a
// blind backoff. Only when that 429 is the adaptive limit probing the
// host's edge: the limit was just cut for it, and the host has room again
// within a round trip or two. It returns 0 (the worker's backoff) for a
// fixed limit, which does not learn from the refusal; for a host whose
// pace is not known yet; and for a host answering 429 again and again
// (more than maxPacedRefusals in a row), which is out of quota rather than
// of concurrency: pacing those would spend a job's attempts within a
// second. l.mu is held.
func (l *Limiter) pace(h *hostState, now time.Time) time.Duration {
	if h.fixed > 0 || h.conc.baseLatency() == 0 || h.refusedInARow > maxPacedRefusals {
		return 0
	}
	wait, _ := l.concurrencyWait(h, now)
	return wait
}

// maxPacedRefusals: a probing adaptive limit oversteps the host's capacity
// by a request or two per cycle, so its 429s come one or two at a time
// between successes.
const maxPacedRefusals = 3
