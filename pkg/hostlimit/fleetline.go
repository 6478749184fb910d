package hostlimit

import (
	"context"
	"encoding/json"
	"slices"
	"time"
)

// When several workers share a host (Config.Peers above 1), a job that one
// worker's concurrency limit refused comes back to whichever worker pulls
// it. The workers pull alike, so each parks about as many of the host's
// jobs on its own line, and every line must drain at the same pace: the
// host's latency over the workers' average limit, not over the worker's
// own. Paced on its own limit, the line of a worker holding a small share
// of the host (or whose limit had fallen while its CPU was starved) drained
// seconds to minutes after the others, at a fraction of the host's capacity
// (BENCHMARKS.md, the adaptive scenario with three workers). So the workers
// post their limits for the host in Buckets, each at most once a second,
// on a refusal (no round trip otherwise), and a line is paced on the higher
// of the worker's own limit and the fleet's average.

// fleetShares is the shared value: each worker's limit for the host as it
// last posted it.
type fleetShares struct {
	Limits map[string]lineShare `json:"limits"`
}

type lineShare struct {
	Limit float64 `json:"limit"`
	At    int64   `json:"at"` // Unix nanoseconds
}

// fleetShare is what this worker knows of the fleet's limits for one host.
// Guarded by Limiter.mu.
type fleetShare struct {
	avg   float64   // the workers' average limit at the last look; 0: none yet
	at    time.Time // when avg was read
	asked time.Time // the last post, successful or not
	busy  bool      // a post is under way
}

const (
	// shareEvery: a worker posts its limit for a host at most this often.
	shareEvery = time.Second
	// shareTTL: a worker that has not posted for this long (it has room, or
	// is gone) no longer counts towards the average, and an average read
	// this long ago is not used.
	shareTTL = 10 * time.Second
	// shareTimeout bounds a post: a refusal must not hold its caller long;
	// the worker's own limit will do meanwhile.
	shareTimeout = 250 * time.Millisecond
)

// shareKey names the shared record of the workers' limits for host.
func shareKey(host string) string { return "s." + escapeKey(host) }

// fleetAvg is the fleet's average limit for h, 0 when unknown or stale.
// l.mu is held.
func (l *Limiter) fleetAvg(h *hostState, now time.Time) float64 {
	if l.peers() < 2 || now.Sub(h.share.at) > shareTTL {
		return 0
	}
	return h.share.avg
}

// postShare posts this worker's limit for h and reads the fleet's average,
// when workers share the host, h's latency is known and the last post is
// shareEvery old. l.mu is not held.
func (l *Limiter) postShare(ctx context.Context, h *hostState) {
	if l.peers() < 2 {
		return
	}
	now := l.cfg.Now()
	l.mu.Lock()
	if h.share.busy || now.Sub(h.share.asked) < shareEvery || h.conc.baseLatency() == 0 {
		l.mu.Unlock()
		return
	}
	h.share.busy, h.share.asked = true, now
	mine := h.ownPace()
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, min(l.cfg.BucketTimeout, shareTimeout))
	defer cancel()
	var avg float64
	err := l.cfg.Buckets.Update(ctx, shareKey(h.key), func(cur []byte) ([]byte, error) {
		var s fleetShares
		if len(cur) > 0 && json.Unmarshal(cur, &s) != nil {
			s = fleetShares{} // unreadable: start afresh
		}
		avg = s.post(l.id, mine, now)
		return json.Marshal(s)
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	h.share.busy = false
	if err == nil {
		h.share.avg, h.share.at = avg, now
	}
}

// post records worker id's limit, forgets workers that have not posted
// within shareTTL, and returns the average of the limits left.
func (s *fleetShares) post(id string, limit float64, now time.Time) float64 {
	if s.Limits == nil {
		s.Limits = map[string]lineShare{}
	}
	s.Limits[id] = lineShare{Limit: limit, At: now.UnixNano()}
	limits := make([]float64, 0, len(s.Limits))
	for w, sh := range s.Limits {
		if now.UnixNano()-sh.At > int64(shareTTL) {
			delete(s.Limits, w)
			continue
		}
		limits = append(limits, sh.Limit)
	}
	// Summed in order, so that the same limits give the same average to
	// the last bit, whatever the map's order.
	slices.Sort(limits)
	var total float64
	for _, v := range limits {
		total += v
	}
	return total / float64(len(limits))
}
