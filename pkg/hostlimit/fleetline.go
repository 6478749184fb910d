package hostlimit

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jetpost/jetpost/pkg/sender"
)

// When several workers share a host (Config.Peers above 1), the jobs its
// concurrency limits refuse are lined up on one line for the whole fleet,
// kept in Buckets like the rate limits' schedules, and paced at the fleet's
// capacity for the host: the sum of the workers' limits, each as its own
// line would pace it. A parked job comes back to whichever worker pulls it,
// so lines of each worker's own, each paced at that worker's limit, drained
// at different speeds: the line of a worker holding a small share of the
// host ended seconds after the others, at a fraction of the host's
// capacity (BENCHMARKS.md, the adaptive scenario with three workers).

// fleetLine is the shared value: the end of the line, and each worker's
// limit for the host as it last booked places.
type fleetLine struct {
	Next   int64                `json:"next"` // Unix nanoseconds
	Limits map[string]lineShare `json:"limits"`
}

type lineShare struct {
	Limit float64 `json:"limit"`
	At    int64   `json:"at"` // Unix nanoseconds
}

// lineShareTTL: a worker that has booked no place on a host's line for
// this long no longer counts towards its pace. Long: a worker that has room
// books none, yet its slots are part of the host's capacity; with 5 s, the
// line came to be paced for the workers that refused alone, which left the
// others' slots idle, so that they refused nothing and dropped out too
// (the last 35 s of a 12,000-job batch ran at a fifth of the capacity).
const lineShareTTL = 30 * time.Second

// lineTimeout bounds a reservation on a fleet's line: a refusal that used to
// cost no round trip must not hold its caller long; this worker's own line
// will do meanwhile.
const lineTimeout = 250 * time.Millisecond

// lineKey names the shared line of the jobs host's concurrency limits
// refused.
func lineKey(host string) string { return parkKey("c." + escapeKey(host)) }

// lineUp moves a job that h's concurrency limit refused (err) to the fleet's
// line, when workers share the host, the line can be reached and its place
// comes sooner: else it keeps the place in this worker's own line that err
// already tells. Never later than the worker's own line: a line shared by
// the fleet also carries the others' mistakes (a worker that saw the host
// stall spaces its block for the stall), and a job back too early is only
// parked again.
func (l *Limiter) lineUp(ctx context.Context, h *hostState, err error) error {
	var na *sender.NotAdmittedError
	if l.peers() < 2 || !errors.As(err, &na) {
		return err
	}
	if wait, ok := l.fleetWait(ctx, h, l.cfg.Now()); ok && wait < na.Wait {
		na.Wait = wait
	}
	return err
}

// fleetWait books a place on the fleet's line of h's refused jobs. As for
// rate limits (rateWait), a worker reserves places in blocks, one round trip
// per block, and hands them out itself; but a block's places that pass
// unused are holes in the line, which moves on as if they had been used:
// with a worker refusing 50 jobs a second and blocks of 16, the line ran
// seconds ahead within a minute and the host's jobs came back at a
// fraction of its capacity. So a block is halved (down to one place) when
// the last one's places passed unused, and doubled (up to parkBlock) when
// they were all handed out before the last of them was due. ok is false when the host's pace is not known
// yet or the line cannot be reached.
func (l *Limiter) fleetWait(ctx context.Context, h *hostState, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	b := l.bucket(lineKey(h.key), Rate{}, now)
	lat, limit, known := l.linePace(h, now)
	l.mu.Unlock()
	if !known {
		return 0, false
	}
	if wait, ok := l.reservedPlace(b, now); ok {
		return wait, true
	}
	bctx, cancel := context.WithTimeout(ctx, min(l.cfg.BucketTimeout, lineTimeout))
	defer cancel()
	select {
	case b.parking <- struct{}{}:
	case <-bctx.Done():
		return 0, false
	}
	defer func() { <-b.parking }()
	// Another request may have reserved a block meanwhile.
	if wait, ok := l.reservedPlace(b, now); ok {
		return wait, true
	}
	l.mu.Lock()
	switch {
	case b.block == 0:
		b.block = parkBlock
	case b.parkLeft > 0:
		b.block = max(1, b.block/2)
	case now.Before(b.blockEnd): // all handed out before the last one's time
		b.block = min(parkBlock, 2*b.block)
	}
	n := b.block
	l.mu.Unlock()
	var first int64
	var spacing time.Duration
	last := now.Add(l.cfg.MaxDefer).UnixNano()
	err := l.cfg.Buckets.Update(bctx, b.key, func(cur []byte) ([]byte, error) {
		var line fleetLine
		if len(cur) > 0 && json.Unmarshal(cur, &line) != nil {
			line = fleetLine{} // unreadable: start afresh
		}
		spacing = line.book(l.id, limit, lat, now)
		start := min(max(line.Next, now.UnixNano()), last)
		first = start + int64(spacing)
		line.Next = start + int64(n)*int64(spacing)
		return json.Marshal(line)
	})
	if err != nil {
		return 0, false
	}
	l.mu.Lock()
	b.parkNext, b.parkLeft, b.spacing = time.Unix(0, first).Add(spacing), n-1, spacing
	b.blockEnd = time.Unix(0, first).Add(time.Duration(n-1) * spacing)
	l.mu.Unlock()
	return min(time.Unix(0, first).Sub(now), l.cfg.MaxDefer), true
}

// book records worker id's limit for the host and returns the line's
// spacing: the host's latency lat over the sum of the limits of the workers
// that booked places lately, overbooked as a worker's own line is.
func (line *fleetLine) book(id string, limit float64, lat time.Duration, now time.Time) time.Duration {
	if line.Limits == nil {
		line.Limits = map[string]lineShare{}
	}
	line.Limits[id] = lineShare{Limit: limit, At: now.UnixNano()}
	var total float64
	for w, s := range line.Limits {
		if now.UnixNano()-s.At > int64(lineShareTTL) {
			delete(line.Limits, w)
			continue
		}
		total += s.Limit
	}
	return lineSpacing(lat, total)
}

// reservedPlace hands out the next of the places b reserved on the fleet's
// line, if one is left and still ahead.
func (l *Limiter) reservedPlace(b *bucket, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b.parkLeft == 0 || !b.parkNext.After(now) {
		return 0, false
	}
	wait := b.parkNext.Sub(now)
	b.parkNext = b.parkNext.Add(b.spacing)
	b.parkLeft--
	return min(wait, l.cfg.MaxDefer), true
}
