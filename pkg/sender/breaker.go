package sender

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/jetpost/jetpost/pkg/job"
)

// breakers holds one circuit breaker per host, created on first use. A
// sync.Map suits the access pattern: written once per host, read on every
// request from many goroutines, which then contend on nothing.
//
// Hosts come from files nobody vetted, so the map must not grow without
// bound: a breaker unused for breakerIdle is dropped (a sweep at most every
// breakerIdle/2, on the request path) unless it is open and its open
// timeout has not passed. A closed one holds fewer recent failures
// than would open it; one whose timeout passed would only let a probe
// through. Such a host's next request starts a fresh, closed breaker. A
// dropped breaker that was not closed is reported to onChange as closed,
// so that metrics and the fleet's breaker board do not show it open for
// ever.
type breakers struct {
	settings Breaker
	onChange func(host string, from, to job.BreakerState)
	m        sync.Map // host -> *hostBreaker
	swept    atomic.Int64
	now      func() time.Time // nil: time.Now; tests set it
}

// breakerIdle is how long a closed breaker is kept unused.
const breakerIdle = 10 * time.Minute

type hostBreaker struct {
	cb          *gobreaker.TwoStepCircuitBreaker[struct{}]
	openTimeout time.Duration
	// state and openedAt mirror the breaker's transitions so BreakerStates
	// never takes gobreaker's lock: OnBreakerChange runs under that lock,
	// and a callback that asks for the states must not deadlock.
	state    atomic.Int32 // gobreaker.State
	openedAt atomic.Int64 // unix nanoseconds of the last transition to open
	lastUsed atomic.Int64 // unix nanoseconds
}

func (b *breakers) clock() time.Time {
	if b.now != nil {
		return b.now()
	}
	return time.Now()
}

func (b *breakers) get(host string) *hostBreaker {
	t := b.clock().UnixNano()
	b.maybeSweep(t)
	v, ok := b.m.Load(host)
	if !ok {
		// Two goroutines may both build one; LoadOrStore keeps the first
		// and the loser, never used, has no side effects.
		v, _ = b.m.LoadOrStore(host, b.newBreaker(host))
	}
	hb := v.(*hostBreaker)
	hb.lastUsed.Store(t)
	return hb
}

// open returns host's breaker if it is open, nil if it is not or the host
// has none yet. It creates nothing; a turn-away counts as a use, so that
// an open timeout longer than breakerIdle does not see its breaker swept
// before its probe.
func (b *breakers) open(host string) *hostBreaker {
	v, ok := b.m.Load(host)
	if !ok {
		return nil
	}
	now := b.clock()
	if hb := v.(*hostBreaker); hb.current(now) == gobreaker.StateOpen {
		hb.lastUsed.Store(now.UnixNano())
		return hb
	}
	return nil
}

// maybeSweep drops breakers unused for breakerIdle (see breakers), at most
// once per half of that. One that is dropped while a request it allowed is still
// out only loses that request's count; the host's next request starts a
// fresh breaker.
func (b *breakers) maybeSweep(now int64) {
	last := b.swept.Load()
	if now-last < int64(breakerIdle/2) || !b.swept.CompareAndSwap(last, now) {
		return
	}
	b.m.Range(func(k, v any) bool {
		hb := v.(*hostBreaker)
		// Failures still inside the window must not be forgotten.
		if now-hb.lastUsed.Load() <= int64(max(breakerIdle, b.settings.Window)) {
			return true
		}
		st := hb.current(time.Unix(0, now))
		if st == gobreaker.StateOpen || !b.m.CompareAndDelete(k, v) {
			return true
		}
		if st != gobreaker.StateClosed && b.onChange != nil {
			b.onChange(k.(string), breakerState(st), job.BreakerClosed)
		}
		return true
	})
}

func (b *breakers) newBreaker(host string) *hostBreaker {
	hb := &hostBreaker{openTimeout: b.settings.OpenTimeout}
	// gobreaker keeps the rolling window (Interval in BucketPeriod steps)
	// and reads time.Now itself: tests that need its time to pass use short
	// real windows and open timeouts and wait for the state they expect;
	// what we compute (deferrals, idle sweeps, reported states) reads b.now.
	hb.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         host,
		MaxRequests:  b.settings.HalfOpenRequests,
		Interval:     b.settings.Window,
		BucketPeriod: b.settings.Window / windowBuckets,
		Timeout:      b.settings.OpenTimeout,
		ReadyToTrip:  b.settings.tripped,
		IsExcluded:   func(err error) bool { return err == errNeutral },
		OnStateChange: func(name string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				hb.openedAt.Store(b.clock().UnixNano())
			}
			hb.state.Store(int32(to))
			if b.onChange != nil {
				b.onChange(name, breakerState(from), breakerState(to))
			}
		},
	})
	return hb
}

// windowBuckets is how finely the failure window rolls: old answers leave
// it a tenth of the window at a time, not all at once.
const windowBuckets = 10

// tripped is the opening policy, given the answers counted in the window:
// at least Failures of them failed, and failures are at least FailureRatio
// of them. A few broken requests in a healthy stream stay under the ratio;
// a host that is down fails every request and opens after Failures.
func (s Breaker) tripped(c gobreaker.Counts) bool {
	answered := c.TotalSuccesses + c.TotalFailures
	return c.TotalFailures >= s.Failures && answered > 0 &&
		float64(c.TotalFailures) >= s.FailureRatio*float64(answered)
}

// current is the breaker's state as gobreaker would report it: open turns
// half-open once the open timeout has passed, even before anyone asks.
func (hb *hostBreaker) current(now time.Time) gobreaker.State {
	st := gobreaker.State(hb.state.Load())
	if st == gobreaker.StateOpen && now.Sub(time.Unix(0, hb.openedAt.Load())) > hb.openTimeout {
		return gobreaker.StateHalfOpen
	}
	return st
}

// deferFor is how long a job turned away by Allow's err should wait at
// most. Open: until the breaker lets a probe through, plus jitter so the
// waiting jobs do not all return at once. Half-open with its probes out: a
// probe will decide soon, so come back after about a quarter of the open
// time. The caller may come back sooner (its retry schedule is shorter).
func (hb *hostBreaker) deferFor(err error, now time.Time, rnd func() float64) time.Duration {
	ot := hb.openTimeout
	if errors.Is(err, gobreaker.ErrTooManyRequests) {
		return ot/8 + time.Duration(rnd()*float64(ot/4))
	}
	remaining := ot - now.Sub(time.Unix(0, hb.openedAt.Load()))
	remaining = min(max(remaining, 0), ot)
	return remaining + time.Duration(rnd()*float64(ot/2))
}

// breakerState names gobreaker's state in jetpost's vocabulary.
func breakerState(st gobreaker.State) job.BreakerState {
	switch st {
	case gobreaker.StateOpen:
		return job.BreakerOpen
	case gobreaker.StateHalfOpen:
		return job.BreakerHalfOpen
	}
	return job.BreakerClosed
}

// BreakerStates returns every known host's breaker state. It is cheap and
// lock-free, for status pages and metrics.
func (s *Sender) BreakerStates() map[string]job.BreakerState {
	now := s.breakers.clock()
	out := make(map[string]job.BreakerState)
	s.breakers.m.Range(func(k, v any) bool {
		out[k.(string)] = breakerState(v.(*hostBreaker).current(now))
		return true
	})
	return out
}

// BreakerOpenError says a job was turned away by its host's breaker: open,
// or half-open with its probes already out. Nothing was sent. It is the
// Err of such a Postponed outcome (errors.As), so that callers can tell it
// from a host limit's deferral: a turn-away is a sign of failure, which a
// job's retry budget must bound, while a full host only asks it to wait.
type BreakerOpenError struct {
	Host  string
	State job.BreakerState // open, or half-open with its probes out
	// Since is when the breaker last opened.
	Since time.Time
	err   error // gobreaker.ErrOpenState or ErrTooManyRequests
}

func (e *BreakerOpenError) Error() string {
	busy := ""
	if e.State == job.BreakerHalfOpen {
		busy = " with its probes out"
	}
	return fmt.Sprintf("circuit breaker for %s is %s%s (opened %s)", e.Host, e.State, busy, e.Since.UTC().Format(time.RFC3339))
}

func (e *BreakerOpenError) Unwrap() error { return e.err }

// turnAway is the Postponed outcome of a request hb's breaker turned away with err.
func (b *breakers) turnAway(host string, hb *hostBreaker, err error, rnd func() float64) Outcome {
	now := b.clock()
	state := job.BreakerOpen
	if errors.Is(err, gobreaker.ErrTooManyRequests) {
		state = job.BreakerHalfOpen
	}
	be := &BreakerOpenError{Host: host, State: state, Since: time.Unix(0, hb.openedAt.Load()), err: err}
	return Outcome{
		Class:      Postponed,
		RetryAfter: hb.deferFor(err, now, rnd),
		Err:        fmt.Errorf("not sent: %w", be),
	}
}
