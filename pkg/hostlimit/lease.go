package hostlimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetpost/jetpost/pkg/retry"
	"github.com/jetpost/jetpost/pkg/sender"
)

const (
	// leasePeriod is how much of a rate a process takes from the shared
	// state in one round trip (within the burst): a tenth of a second's
	// worth keeps round trips near ten per second per host whatever the
	// rate.
	leasePeriod = 100 * time.Millisecond
	// leaseSlack is how long leased tokens stay usable past their own
	// interval; unused ones then lapse instead of becoming a later burst.
	leaseSlack = 50 * time.Millisecond
	// overbookRate spreads refused jobs' returns a little faster than the
	// rate (on the fleet-wide schedule), so a free token rarely waits for a
	// job; not more, for the reason given at overbookConcurrency.
	overbookRate = 1.1
	// parkBlock is how many places on a rate limit's shared schedule of
	// refused jobs a worker reserves in one round trip.
	parkBlock = 16
	// refillBusyWait is how soon to look again when another request is
	// leasing tokens for the same limit.
	refillBusyWait = 2 * time.Millisecond
	// unreachableWait is how long jobs wait while the rate state cannot be
	// reached: rate-limited hosts get nothing rather than too much.
	unreachableWait = time.Second
)

// bucket is this process's view of one shared rate limit: a lease of
// tokens taken from the shared state, spent locally.
type bucket struct {
	key  string
	rate Rate
	// refill admits one round trip to the shared state at a time; the
	// others wait for its result instead of asking again.
	refill chan struct{}

	// Guarded by Limiter.mu.
	tokens     int
	expires    time.Time
	emptyUntil time.Time // the shared state had nothing; don't ask before
	failure    error     // the last round trip failed (until emptyUntil)
	// parkNext and parkLeft are the places reserved on the shared schedule
	// of refused jobs not yet handed out; cursor is the fallback schedule.
	parkNext time.Time
	parkLeft int
	cursor   time.Time
	lastUsed time.Time
	// parking admits one reservation on the shared schedule at a time.
	parking chan struct{}
	takers  int // requests in takeTokens for this bucket now
}

// bucket returns this process's view of the shared limit key. l.mu is held.
func (l *Limiter) bucket(key string, r Rate, now time.Time) *bucket {
	b, ok := l.buckets[key]
	if !ok || b.rate != r {
		b = &bucket{key: key, rate: r, refill: make(chan struct{}, 1), parking: make(chan struct{}, 1)}
		l.buckets[key] = b
	}
	b.lastUsed = now
	return b
}

// takeTokens takes one token from each bucket, leasing from the shared
// state as needed. Either every bucket gives one or none is spent. When the
// next token is near (within a lease period) and the waiting buffer has
// room, it waits for it here rather than refusing.
func (l *Limiter) takeTokens(ctx context.Context, host string, need []*bucket) error {
	l.mu.Lock()
	for _, b := range need {
		b.takers++
	}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		for _, b := range need {
			b.takers--
		}
		l.mu.Unlock()
	}()
	var waited time.Duration
	for {
		var empty *bucket
		var until time.Time
		for _, b := range need {
			u, err := l.ensure(ctx, host, b)
			if err != nil {
				return err
			}
			if !u.IsZero() {
				empty, until = b, u
				break
			}
		}
		now := l.cfg.Now()
		l.mu.Lock()
		if empty == nil {
			ready := true
			for _, b := range need {
				if b.tokens < 1 || !now.Before(b.expires) {
					ready = false // others took them meanwhile
				}
			}
			if ready {
				for _, b := range need {
					b.tokens--
				}
				l.mu.Unlock()
				return nil
			}
			empty, until = need[0], now
		}
		// Wait here while the next token is near (a lease period) and the
		// whole wait stays within MaxWait: JetStream returns parked jobs
		// in bursts, and a token that accrues while no job is at hand is
		// lost once the burst is full.
		wait := max(until.Sub(now), time.Millisecond)
		if wait <= leasePeriod && waited+wait <= l.cfg.MaxWait && l.waiting < l.cfg.MaxWaiting {
			waited += wait
			l.waiting++
			l.mu.Unlock()
			err := retry.Sleep(ctx, wait)
			l.mu.Lock()
			l.waiting--
			l.mu.Unlock()
			if err != nil {
				return err
			}
			continue
		}
		l.mu.Unlock()
		return &sender.NotAdmittedError{Host: host, Wait: l.rateWait(ctx, empty, now, until),
			Reason: "rate limit " + empty.rate.String() + " reached"}
	}
}

// ensure makes sure b holds at least one usable token, leasing from the
// shared state when it holds none. It returns the zero time when b has a
// token, or until when the shared state has none; an error when the state
// cannot be reached (a refusal) or ctx ended.
func (l *Limiter) ensure(ctx context.Context, host string, b *bucket) (time.Time, error) {
	if until, err := l.ready(host, b); err != errEmpty {
		return until, err
	}
	select {
	case b.refill <- struct{}{}:
	default:
		// Another request is leasing for this bucket. Blocking here would
		// hold this worker slot for a round trip that may be slow; say
		// "not yet" instead, and let the caller wait in the buffer or be
		// deferred.
		return l.cfg.Now().Add(refillBusyWait), nil
	}
	defer func() { <-b.refill }()
	// Someone may have refilled it while we waited.
	if until, err := l.ready(host, b); err != errEmpty {
		return until, err
	}

	now := l.cfg.Now()
	// Lease this process's share of a lease period's worth (within the
	// burst), or more if more requests are at hand: tokens leased and left
	// unused would be lost to the fleet (a lease lapses) while other
	// workers' jobs wait for them.
	chunk := b.rate.EffectiveBurst()
	if per := int(b.rate.PerSecond * leasePeriod.Seconds()); per < chunk {
		chunk = max(1, per)
	}
	l.mu.Lock()
	want := max(1, min(chunk, max(b.takers, chunk/l.peers())))
	l.mu.Unlock()
	var granted int
	var wait time.Duration
	bctx, cancel := context.WithTimeout(ctx, l.cfg.BucketTimeout)
	err := l.cfg.Buckets.Update(bctx, b.key, func(cur []byte) ([]byte, error) {
		tat, n, w := grant(parseTAT(cur), now.UnixNano(), b.rate, want)
		granted, wait = n, w
		if n == 0 {
			return nil, nil
		}
		return formatTAT(tat), nil
	})
	cancel()

	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err != nil && ctx.Err() != nil:
		return time.Time{}, ctx.Err()
	case err != nil:
		b.failure = err
		b.emptyUntil = now.Add(unreachableWait)
		return time.Time{}, l.unreachable(host, b)
	case granted == 0:
		b.failure = nil
		// Ask again once a useful lease can have accrued, not for every
		// token: this bounds the round trips per host.
		b.emptyUntil = now.Add(max(wait, time.Duration(want)*b.rate.Interval()/4))
		return b.emptyUntil, nil
	}
	b.failure = nil
	b.tokens = granted
	b.expires = now.Add(time.Duration(granted)*b.rate.Interval() + leaseSlack)
	return time.Time{}, nil
}

// unreachable is the refusal while the shared state cannot be reached.
// l.mu is held.
func (l *Limiter) unreachable(host string, b *bucket) error {
	return &sender.NotAdmittedError{Host: host, Wait: l.jitter(unreachableWait),
		Reason: fmt.Sprintf("rate limit %s: shared state unreachable: %v", b.rate, b.failure)}
}

var errEmpty = errors.New("empty")

// ready reports the zero time when b has a usable token, errEmpty when a
// lease may be asked for, the time until which the shared state said it
// has none, or a refusal while it cannot be reached.
func (l *Limiter) ready(host string, b *bucket) (time.Time, error) {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if b.tokens > 0 && now.Before(b.expires) {
		return time.Time{}, nil
	}
	b.tokens = 0
	if now.Before(b.emptyUntil) {
		if b.failure != nil {
			return time.Time{}, l.unreachable(host, b)
		}
		return b.emptyUntil, nil
	}
	return time.Time{}, errEmpty
}

// rateWait schedules a job refused for rate. The schedule is shared by the
// fleet, next to the limit's state: refused jobs, whichever worker turned
// them away, come back spaced a little faster than the rate, and none
// before the limit can have a token. A worker reserves places in blocks
// (one round trip for parkBlock refusals) and hands them out itself. If
// the shared schedule cannot be reached at once, it falls back to a cursor
// of its own, spaced for its share of the fleet (Config.Peers).
func (l *Limiter) rateWait(ctx context.Context, b *bucket, now, until time.Time) time.Duration {
	spacing := time.Duration(float64(b.rate.Interval()) / overbookRate)
	// Never sooner than the next token can be there.
	earliest := max(until.Sub(now), b.rate.Interval())
	var notBefore time.Time
	reserved := func() (time.Duration, bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if b.parkLeft > 0 && !b.parkNext.Before(now) {
			wait := b.parkNext.Sub(now)
			b.parkNext = b.parkNext.Add(spacing)
			b.parkLeft--
			return min(max(wait, earliest), l.cfg.MaxDefer), true
		}
		notBefore = now.Add(earliest)
		if b.emptyUntil.After(notBefore) {
			notBefore = b.emptyUntil
		}
		return 0, false
	}
	if wait, ok := reserved(); ok {
		return wait
	}

	local := func() time.Duration {
		peers := l.peers()
		l.mu.Lock()
		defer l.mu.Unlock()
		if b.cursor.Before(notBefore) {
			b.cursor = notBefore
		}
		return l.schedule(&b.cursor, now, spacing*time.Duration(peers))
	}
	// Another request may be reserving a block: its places will do.
	bctx, cancel := context.WithTimeout(ctx, l.cfg.BucketTimeout)
	defer cancel()
	select {
	case b.parking <- struct{}{}:
	case <-bctx.Done():
		return local()
	}
	defer func() { <-b.parking }()
	if wait, ok := reserved(); ok {
		return wait
	}
	// As with a cursor (schedule), the line ends no later than MaxDefer
	// out: jobs told MaxDefer come back then, and places past it would stay
	// empty and push back the jobs of the fleet's next batch.
	var start int64
	last := max(notBefore.UnixNano(), now.Add(l.cfg.MaxDefer).UnixNano())
	err := l.cfg.Buckets.Update(bctx, parkKey(b.key), func(cur []byte) ([]byte, error) {
		start = min(max(parseTAT(cur), notBefore.UnixNano()), last)
		return formatTAT(start + parkBlock*int64(spacing)), nil
	})
	if err != nil {
		return local()
	}
	first := time.Unix(0, start)
	l.mu.Lock()
	b.parkNext, b.parkLeft = first.Add(spacing), parkBlock-1
	l.mu.Unlock()
	return min(first.Sub(now), l.cfg.MaxDefer)
}

// peers is how many processes share the rate limits (at least 1).
func (l *Limiter) peers() int {
	if l.cfg.Peers == nil {
		return 1
	}
	return max(1, l.cfg.Peers())
}
