package hostlimit

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// hostState is what the Limiter knows of one host: its slots and waiters,
// its line of refused jobs, and what its answers taught. Guarded by
// Limiter.mu.
type hostState struct {
	key      string
	inflight int
	fixed    int // >0: the limit is fixed; conc still learns the latency
	conc     *adaptive
	rate     Rate
	hasRate  bool
	cursor   time.Time // the end of the line of jobs refused for concurrency
	share    fleetShare
	// waiters are requests waiting in Admit for a slot, first come first
	// served; release hands its slot to the first.
	waiters []chan struct{}
	// held are the slots of requests the host answered 429, each kept
	// until its time (a latency after the answer) under an adaptive limit:
	// the host was full, and a request sent in the freed slot before any
	// of the host's requests can have finished would be refused as well.
	// A host that refuses at once would otherwise see a storm of requests
	// (one per slot per millisecond) that no cut can stop: the limit does
	// not fall below 1, nor more than once per round trip.
	held []time.Time
	// owedSince is when the host last answered or went from idle to busy,
	// whichever is later: with requests in flight, the host's latency is at
	// least the time since, which is how a host that hangs is noticed
	// before any of its requests times out. An idle gap is not a stall.
	owedSince time.Time
	lastUsed  time.Time
	refused   uint64
	admitted  uint64
	// refusedInARow counts the host's 429s since its last success: one now
	// and then is an adaptive limit probing the edge; a run of them is a
	// host refusing for another reason (a quota), which Pace leaves to
	// the worker's backoff.
	refusedInARow int
}

// stalled is how long the host has owed an answer: 0 while it is idle.
func (h *hostState) stalled(now time.Time) time.Duration {
	if h.inflight == 0 {
		return 0
	}
	return max(0, now.Sub(h.owedSince))
}

// occupy takes one of h's slots; a host that was idle starts owing an
// answer now.
func (h *hostState) occupy(now time.Time) {
	if h.inflight == 0 {
		h.owedSince = now
	}
	h.inflight++
}

// room reports whether h has a free slot now, its held slots that are
// due given back.
func (h *hostState) room(now time.Time) bool {
	if len(h.held) > 0 {
		h.held = slices.DeleteFunc(h.held, func(t time.Time) bool { return !now.Before(t) })
	}
	return h.inflight+len(h.held) < h.limit()
}

// ownPace is the limit this worker's line of h's refused jobs is paced on,
// as far as its own answers tell: the host's best lately, the highest of
// its limit now, where the host last pushed back and the highest it held
// lately (see linePace).
func (h *hostState) ownPace() float64 {
	limit := float64(h.limit())
	if h.fixed == 0 {
		limit = max(limit, h.conc.lastMax, h.conc.recentPeak())
	}
	return limit
}

func (h *hostState) limit() int {
	if h.fixed > 0 {
		return h.fixed
	}
	return h.conc.current()
}

// host returns the state of key, creating it. l.mu is held.
func (l *Limiter) host(key string, now time.Time) *hostState {
	h, ok := l.hosts[key]
	if !ok {
		h = &hostState{key: key}
		h.conc = newAdaptive(l.cfg.InitialLimit, l.cfg.MaxInflight, l.cfg.Backoff, l.cfg.LatencyTolerance)
		if l.cfg.Fixed {
			h.fixed = l.cfg.MaxInflight
		}
		h.rate, h.hasRate = l.cfg.Rates.Match(key)
		l.hosts[key] = h
	}
	h.lastUsed = now
	return h
}

// maybeSweep forgets idle hosts and buckets, now and then. l.mu is held.
func (l *Limiter) maybeSweep(now time.Time) {
	l.calls++
	if l.calls%1024 != 0 && now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, h := range l.hosts {
		if h.inflight == 0 && len(h.waiters) == 0 && now.Sub(h.lastUsed) > l.cfg.IdleAfter {
			delete(l.hosts, k)
		}
	}
	for k, b := range l.buckets {
		if now.Sub(b.lastUsed) > l.cfg.IdleAfter && len(b.refill) == 0 && len(b.parking) == 0 {
			delete(l.buckets, k)
		}
	}
}

// HostState is one host's limits as a Limiter sees them now.
type HostState struct {
	Host     string `json:"host"`
	Limit    int    `json:"limit"` // concurrency limit now
	InFlight int    `json:"in_flight"`
	Waiting  int    `json:"waiting"` // requests waiting in Admit for a slot
	Adaptive bool   `json:"adaptive"`
	// Rate is the host's configured rate limit, "" when none.
	Rate string `json:"rate,omitempty"`
	// Latency is the recent latency (0 until enough answers came back).
	Latency  time.Duration `json:"latency_ns"`
	Admitted uint64        `json:"admitted"`
	Refused  uint64        `json:"refused"`
}

// Busiest returns at most n of hosts, those with the most work first (in
// flight, then admitted, then by name), for reports that must stay bounded
// whatever number of hosts untrusted files name. hosts is not changed.
func Busiest(hosts []HostState, n int) []HostState {
	hosts = slices.Clone(hosts)
	if len(hosts) <= n {
		return hosts
	}
	slices.SortStableFunc(hosts, func(x, y HostState) int {
		return cmp.Or(cmp.Compare(y.InFlight, x.InFlight), cmp.Compare(y.Admitted, x.Admitted), strings.Compare(x.Host, y.Host))
	})
	return hosts[:n]
}

// Snapshot returns every known host's state, sorted by host. It sweeps
// too: the board asks every few seconds, so an idle worker also forgets
// idle hosts, rather than at the next batch's first request.
func (l *Limiter) Snapshot() []HostState {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maybeSweep(now)
	out := make([]HostState, 0, len(l.hosts))
	for _, h := range l.hosts {
		s := HostState{Host: h.key, Limit: h.limit(), InFlight: h.inflight, Waiting: len(h.waiters), Adaptive: h.fixed == 0,
			Admitted: h.admitted, Refused: h.refused, Latency: h.conc.latency(0)}
		if h.hasRate {
			s.Rate = h.rate.String()
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b HostState) int { return strings.Compare(a.Host, b.Host) })
	return out
}
