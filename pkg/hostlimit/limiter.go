package hostlimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jetpost/jetpost/pkg/sender"
)

// Config configures a Limiter. Zero values take the documented defaults.
type Config struct {
	// MaxInflight bounds the requests in flight to one host from this
	// process: the fixed limit, or the ceiling of the adaptive one.
	// Required, at least 1.
	MaxInflight int
	// Fixed turns adaptive concurrency off: every host may have
	// MaxInflight requests in flight.
	Fixed bool
	// InitialLimit is where a host's adaptive limit starts; default a
	// quarter of MaxInflight, between 4 and 20 (never above MaxInflight).
	// Until a host has answered, its limit is all that keeps it from
	// taking every slot: a host that hangs holds this many until the
	// timeout. Slow start doubles it every round trip for a host that
	// answers well.
	InitialLimit int
	// Backoff multiplies the limit on each overload signal; default 0.9.
	Backoff float64
	// LatencyTolerance: a recent latency above this multiple of the host's
	// baseline (and more than 10 ms above it) counts as overload; default 2.
	LatencyTolerance float64

	// Rates are the per-host rate limits; Buckets holds their state, shared
	// by every process that must respect them together. Nil Buckets: a
	// MemBuckets, so the limits hold for this process only.
	Rates   Rules
	Buckets Buckets
	// BucketTimeout bounds one round trip to Buckets; default 2s.
	BucketTimeout time.Duration
	// Peers, if set, tells how many worker processes share the rate limits
	// (this one included): token leases are sized for this process's share
	// of the rate, and so is the fallback schedule of refused jobs while the
	// fleet's shared one cannot be reached. Nil: 1.
	Peers func() int

	// MaxWaiting is how many requests may wait in Admit at once, for a
	// slot or a token that is due very soon, instead of being refused;
	// 0: none wait. Each holds its caller for at most MaxWait, so the
	// caller needs that many more handlers than requests it sends (cmd/worker
	// runs them on top of JETPOST_MAX_INFLIGHT, and the sender bounds the
	// requests): the buffer bridges the pauses between JetStream's
	// redeliveries (see the package documentation).
	MaxWaiting int
	// MaxWait bounds one such wait; default 1s. A wait for a slot is also
	// bounded by eight of the host's latencies (one guessed latency, 100 ms,
	// until about 20 good answers have told it).
	MaxWait time.Duration
	// MaxDefer caps how long one refused job is told to wait; default 2m.
	MaxDefer time.Duration
	// IdleAfter: a host with nothing in flight, unused this long, is
	// forgotten (its learned limit too); default 10m. Hosts come from
	// untrusted files: the state must not grow without bound.
	IdleAfter time.Duration

	// Now is the clock; default time.Now. Rate state compares wall-clock
	// times across processes.
	Now func() time.Time
}

// Defaults applied by New.
const (
	DefaultInitialLimit  = 20 // at most; see Config.InitialLimit
	DefaultBackoff       = 0.9
	DefaultTolerance     = 2.0
	DefaultBucketTimeout = 2 * time.Second
	DefaultMaxWait       = time.Second
	DefaultMaxDefer      = 2 * time.Minute
	DefaultIdleAfter     = 10 * time.Minute
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
	// waitersPerSlot and waitLatencies size a host's share of the waiting
	// buffer: up to six requests per slot, each waiting at most eight
	// latencies (and MaxWait). JetStream hands parked jobs back in bursts,
	// with pauses of 100 ms and more between them while acknowledgements
	// stream in and more than a thousand jobs are parked; the buffer
	// carries the host's slots through such pauses. Against a host taking
	// 30 requests of 50 ms, four and four (120 jobs covering 200 ms) gave
	// 517-556 jobs/s of its 600; six and eight, 556-574 (BENCHMARKS.md).
	waitersPerSlot = 6
	waitLatencies  = 8
	// latencyGuess stands in for a host's latency until answers tell.
	latencyGuess = 100 * time.Millisecond
	// overbook spreads refused jobs' returns a little faster than the
	// host's estimated throughput (concurrency, per process) or the rate
	// (fleet-wide schedule), so a free slot or token rarely waits for a
	// job; the waiting
	// buffer absorbs the surplus, the rest is parked again. Not more: a
	// steady stream of delayed NAKs holds up JetStream's redeliveries (each
	// one pushes the consumer's redelivery timer 10 ms out), so parking
	// jobs again and again would slow every deferred job of the fleet.
	overbookConcurrency = 1.25
	overbookRate        = 1.1
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

// Limiter is a sender.Admission: per-host concurrency limits (adaptive by
// default) and rate limits. It is safe for concurrent use.
type Limiter struct {
	cfg Config

	mu      sync.Mutex
	hosts   map[string]*hostState
	buckets map[string]*bucket
	waiting int // requests waiting in Admit
	calls   int
	swept   time.Time
	rnd     *rand.Rand
}

type hostState struct {
	key      string
	inflight int
	fixed    int // >0: the limit is fixed; conc still learns the latency
	conc     *adaptive
	rate     Rate
	hasRate  bool
	cursor   time.Time // the end of the line of jobs refused for concurrency
	// waiters are requests waiting in Admit for a slot, first come first
	// served; release hands its slot to the first.
	waiters []chan struct{}
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

func (h *hostState) limit() int {
	if h.fixed > 0 {
		return h.fixed
	}
	return h.conc.current()
}

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

// New validates cfg and applies its defaults.
func New(cfg Config) (*Limiter, error) {
	switch {
	case cfg.MaxInflight < 1:
		return nil, fmt.Errorf("hostlimit: max in flight per host %d must be at least 1", cfg.MaxInflight)
	case cfg.InitialLimit < 0:
		return nil, fmt.Errorf("hostlimit: initial limit %d is negative", cfg.InitialLimit)
	case cfg.Backoff != 0 && (cfg.Backoff < 0.5 || cfg.Backoff >= 1):
		return nil, fmt.Errorf("hostlimit: backoff %v is not in [0.5, 1)", cfg.Backoff)
	case cfg.LatencyTolerance != 0 && cfg.LatencyTolerance < 1:
		return nil, fmt.Errorf("hostlimit: latency tolerance %v is below 1", cfg.LatencyTolerance)
	case cfg.MaxWaiting < 0:
		return nil, fmt.Errorf("hostlimit: max waiting %d is negative", cfg.MaxWaiting)
	case cfg.MaxDefer < 0, cfg.IdleAfter < 0, cfg.BucketTimeout < 0, cfg.MaxWait < 0:
		return nil, errors.New("hostlimit: durations must not be negative")
	}
	if cfg.InitialLimit == 0 {
		cfg.InitialLimit = min(max(cfg.MaxInflight/4, 4), DefaultInitialLimit)
	}
	cfg.InitialLimit = min(cfg.InitialLimit, cfg.MaxInflight)
	if cfg.Backoff == 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.LatencyTolerance == 0 {
		cfg.LatencyTolerance = DefaultTolerance
	}
	if cfg.Buckets == nil {
		cfg.Buckets = &MemBuckets{}
	}
	if cfg.BucketTimeout == 0 {
		cfg.BucketTimeout = DefaultBucketTimeout
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxDefer == 0 {
		cfg.MaxDefer = DefaultMaxDefer
	}
	if cfg.IdleAfter == 0 {
		cfg.IdleAfter = DefaultIdleAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{
		cfg:     cfg,
		hosts:   map[string]*hostState{},
		buckets: map[string]*bucket{},
		rnd:     rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}, nil
}

var _ sender.Admission = (*Limiter)(nil)

// Admit implements sender.Admission: it takes a token of each rate limit
// that applies (the host's, and the job's batch rate), then a slot under the
// host's concurrency limit, or refuses with the time to come back.
// While the process has room in its waiting buffer (MaxWaiting), a
// request that would get a slot or a token very soon waits for it here
// instead: that keeps a busy host's slots full between redeliveries.
func (l *Limiter) Admit(ctx context.Context, r sender.AdmitRequest) (*sender.Permit, error) {
	now := l.cfg.Now()
	l.mu.Lock()
	l.maybeSweep(now)
	h := l.host(r.Host, now)
	var need []*bucket
	if h.hasRate {
		need = append(need, l.bucket(hostKey(r.Host), h.rate, now))
	}
	if r.BatchRate > 0 && r.Batch != "" {
		need = append(need, l.bucket(batchKey(r.Batch, r.Host), Rate{PerSecond: min(r.BatchRate, MaxRate)}, now))
	}
	if len(need) > 0 {
		// Tokens first, then the slot: a request waiting for a token must
		// not hold one of the host's slots meanwhile. But a request that
		// will find no slot must not spend a token either.
		if h.inflight >= h.limit() || len(h.waiters) > 0 {
			if _, ok := l.mayWait(h, now); !ok {
				err := l.refuseConcurrency(h, now)
				l.mu.Unlock()
				return nil, err
			}
		}
		l.mu.Unlock()
		if err := l.takeTokens(ctx, r.Host, need); err != nil {
			l.mu.Lock()
			h.refused++
			l.mu.Unlock()
			return nil, err
		}
		l.mu.Lock()
	}
	// The token (if any) is spent; should the slot be gone meanwhile, it
	// is lost with the refusal. That takes a race at the limit's edge.
	if err := l.acquireSlot(ctx, h, l.cfg.Now()); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	h.admitted++
	inflight := h.inflight
	l.mu.Unlock()
	start := l.cfg.Now()
	return sender.NewPermit(len(need) > 0, func(fb sender.Feedback) time.Duration {
		return l.release(h, fb, start, inflight)
	}), nil
}

// acquireSlot reserves one of h's slots, waiting for one in the buffer if
// it may, or returns the refusal. l.mu is held on entry and on return.
func (l *Limiter) acquireSlot(ctx context.Context, h *hostState, now time.Time) error {
	if h.inflight < h.limit() && len(h.waiters) == 0 {
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
	perHost, lat, waits := waitersPerSlot*h.limit(), h.conc.latency(0), waitLatencies
	if lat == 0 {
		// A host that has not answered yet may be one that never will:
		// wait little, and for few slots.
		perHost, lat, waits = h.limit()/2, latencyGuess, 1
	}
	if l.waiting >= l.cfg.MaxWaiting || len(h.waiters) >= perHost {
		return 0, false
	}
	if h.stalled(now) > 2*lat {
		return 0, false // the host is not answering: waiting would only hold the slot
	}
	return min(l.cfg.MaxWait, time.Duration(waits)*lat), true
}

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

// refuseConcurrency counts and schedules a refusal. l.mu is held.
func (l *Limiter) refuseConcurrency(h *hostState, now time.Time) error {
	h.refused++
	return &sender.NotAdmittedError{Host: h.key, Wait: l.concurrencyWait(h, now),
		Reason: fmt.Sprintf("concurrency limit %d reached", h.limit())}
}

// grantWaiters hands free slots of h to its waiters, first come first
// served. l.mu is held.
func (l *Limiter) grantWaiters(h *hostState, now time.Time) {
	for len(h.waiters) > 0 && h.inflight < h.limit() {
		w := h.waiters[0]
		h.waiters = slices.Delete(h.waiters, 0, 1)
		l.waiting--
		h.occupy(now)
		w <- struct{}{}
	}
}

// release frees the slot of a request admitted at start, when inflight
// were in flight, and learns from its feedback; for a 429 that asks for a
// pace it returns the retry's delay (see pace).
func (l *Limiter) release(h *hostState, fb sender.Feedback, start time.Time, inflight int) time.Duration {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	h.inflight--
	h.lastUsed, h.owedSince = now, now
	switch {
	case !fb.Sent || fb.Canceled:
	case fb.Status == http.StatusTooManyRequests:
		h.refusedInARow++
	case fb.Status > 0 && fb.Status < 400:
		h.refusedInARow = 0
	}
	// With a fixed limit the adaptive state still learns the latency, for
	// scheduling refused jobs; its own limit is not used.
	h.conc.observe(fb, start, inflight, now)
	l.grantWaiters(h, now)
	if !fb.WantPace {
		return 0
	}
	return l.pace(h, now)
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

// concurrencyWait schedules a job refused for concurrency. Refused jobs
// form a line, spaced at a little faster than the pace at which the host's
// slots free up, by Little's law limit ÷ latency, so that they come back
// about when there is room instead of all at once; one that comes back and
// still finds no room goes to the back of the line again. Returns thus
// never come much faster than the host can take them, which keeps the
// delayed NAKs, and JetStream's work, to about one per job. l.mu is held.
func (l *Limiter) concurrencyWait(h *hostState, now time.Time) time.Duration {
	stalled := h.stalled(now)
	lat := h.conc.baseLatency()
	if lat == 0 {
		// Too few answers to know the host's pace (its first round trips):
		// come back soon and be scheduled then, rather than parked for
		// long on a guess. A host that hangs makes the waits grow.
		return min(l.jitter(max(latencyGuess, stalled)), l.cfg.MaxDefer)
	}
	// The pace is taken optimistically, at the host's best lately (its
	// baseline latency, the higher of its limit now and where it last
	// pushed back): jobs parked on a pessimistic guess after a hiccup would
	// come back too slowly for a host that recovered, and leave its slots
	// idle; jobs that come back too early are only parked again. A host
	// that stops answering slows the pace down.
	lat = max(lat, stalled)
	limit := float64(h.limit())
	if h.fixed == 0 {
		limit = max(limit, h.conc.lastMax)
		if h.conc.slowStart {
			// Still doubling every round trip, with no sign yet of where
			// it stops: the pace may be anything up to the ceiling. Jobs
			// lined up for today's limit would come back a round trip per
			// doubling too late: a host answering in 1 s, its limit on the
			// way from 20 to 1,000, had 5,000 jobs parked up to two
			// minutes out and sent 40 a second.
			limit = h.conc.max
		}
	}
	return l.schedule(&h.cursor, now, time.Duration(float64(lat)/limit/overbookConcurrency))
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
	return l.concurrencyWait(h, now)
}

// maxPacedRefusals: a probing adaptive limit oversteps the host's capacity
// by a request or two per cycle, so its 429s come one or two at a time
// between successes.
const maxPacedRefusals = 3

// schedule books the next place on a cursor spaced by spacing and returns
// the wait until it, capped by MaxDefer. A job told MaxDefer comes back
// then, so that is its place: the cursor never runs further ahead, or the
// places such jobs leave empty would push every later job back, even
// those of a batch that arrives after the line has long drained.
func (l *Limiter) schedule(cursor *time.Time, now time.Time, spacing time.Duration) time.Duration {
	if cursor.Before(now) {
		*cursor = now
	}
	*cursor = cursor.Add(max(spacing, time.Microsecond))
	if last := now.Add(l.cfg.MaxDefer); cursor.After(last) {
		*cursor = last
	}
	return cursor.Sub(now)
}

// jitter returns a duration uniformly drawn in [d/2, 3d/2). l.mu is held.
func (l *Limiter) jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(l.rnd.Int64N(int64(d)+1))
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
			err := sleep(ctx, wait)
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

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
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
