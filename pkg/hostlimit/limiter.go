package hostlimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
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
	// fleet's shared one cannot be reached. Above 1, the workers also post
	// their concurrency limits for the hosts they refuse jobs for, and pace
	// their lines of refused jobs on the fleet's average. Nil: 1.
	Peers func() int

	// MaxWaiting is how many requests may wait in Admit at once, for a
	// slot or a token that is due very soon, instead of being refused;
	// 0: none wait. Each holds its caller for at most MaxWait, so the
	// caller needs that many more handlers than requests it sends (cmd/worker
	// runs them on top of JETPOST_MAX_INFLIGHT, and the sender bounds the
	// requests): the buffer bridges the pauses between JetStream's
	// redeliveries (see the package documentation).
	MaxWaiting int
	// FastWaiting is how many more requests may wait, beyond MaxWaiting,
	// for the slots of a fast host: one that serves them all within
	// 100 ms. They take handlers other hosts' jobs could use, for about
	// that long while it keeps its pace, up to MaxWait if it stalls
	// (cmd/worker: JETPOST_MAX_INFLIGHT).
	FastWaiting int
	// MaxWait bounds one such wait; default 1s. A wait for a slot is also
	// bounded by eight of the host's latencies (one guessed latency, 100 ms,
	// until about 20 good answers have told it), unless the host is fast.
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
	id      string // this process, in the fleet's record of limits (fleetShares)
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
	case cfg.MaxWaiting < 0 || cfg.FastWaiting < 0:
		return nil, fmt.Errorf("hostlimit: max waiting %d or fast waiting %d is negative", cfg.MaxWaiting, cfg.FastWaiting)
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
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	return &Limiter{
		cfg:     cfg,
		hosts:   map[string]*hostState{},
		buckets: map[string]*bucket{},
		rnd:     rnd,
		id:      strconv.FormatUint(rnd.Uint64(), 36),
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
		if !h.room(now) || len(h.waiters) > 0 {
			if _, ok := l.mayWait(h, now); !ok {
				err := l.refuseConcurrency(h, now)
				l.mu.Unlock()
				l.postShare(ctx, h)
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
		l.postShare(ctx, h)
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
		if h.fixed == 0 {
			h.held = append(h.held, now.Add(h.conc.holdTime()))
		}
	case fb.Status > 0 && fb.Status < 400:
		h.refusedInARow = 0
	}
	// With a fixed limit the adaptive state still learns the latency, for
	// scheduling refused jobs; its own limit is not used.
	h.conc.observe(fb, start, inflight, h.inflight, now)
	l.grantWaiters(h, now)
	if !fb.WantPace {
		return 0
	}
	return l.pace(h, now)
}

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
