package sender

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Admission decides, before a request is sent, whether it may start now:
// per-host concurrency and rate limits live behind it (pkg/hostlimit).
// Send and Post consult it after the request is built and before the
// breaker, so a request held back costs no HTTP request, no attempt and no
// breaker probe. Callbacks are subject to it like jobs: a callback URL
// comes from the same untrusted file and may name any host, the protected
// API included. It is the sender's one seam to the limits: everything else
// travels on the Permit.
type Admission interface {
	// Admit asks to start one request. When it returns a nil error the
	// caller must call the permit's Done exactly once, with what became of
	// the request (Feedback.Sent false when nothing was sent after all).
	//
	// A refusal is an error, usually a *NotAdmittedError whose Wait says
	// when to try again; Send turns any error into a Postponed outcome. Admit
	// runs on the path of every job and holds its caller (but no request
	// place, see Config.MaxRequests) while it runs: it answers at once or
	// after a short, bounded wait (a fleet-wide token lease, a slot or
	// token due very soon), and gives up when ctx ends. Waiting for
	// capacity is what the deferral is for.
	Admit(ctx context.Context, r AdmitRequest) (*Permit, error)
}

// Permit is an admitted request's licence to start.
type Permit struct {
	// RateToken says that a rate token was spent on the request. Such a
	// request that then waits longer than maxTokenAge for one of
	// Config.MaxRequests places is deferred instead of sent: tokens spent
	// by requests that queued for places would go out together when
	// places free up, over the rate. (Taking the place first would be
	// exact, but a request waiting for its token would hold a place, and
	// other hosts' jobs would queue behind a rate-limited host.)
	RateToken bool

	done func(Feedback) time.Duration
	once sync.Once
}

// NewPermit returns a permit whose Done calls done, once. done answers the
// retry's delay for feedback that asks for it (Feedback.WantPace), else 0.
func NewPermit(rateToken bool, done func(Feedback) time.Duration) *Permit {
	return &Permit{RateToken: rateToken, done: done}
}

// Done tells the Admission what became of the request and frees what the
// permit held. For a 429 that will be retried without the host's own
// Retry-After (Feedback.WantPace) it returns how long the retry should
// wait: an adaptive limit that was just cut for that answer knows the
// host's pace, and a job sent back for a blind backoff would return after
// the host's other jobs (or alone, at the end of a batch, up to a backoff
// later). 0 leaves the delay to the caller's backoff (a host out of quota
// refuses again and again, and backoff slows those retries down). Calls
// after the first, and calls on a nil permit, do nothing and return 0.
func (p *Permit) Done(fb Feedback) time.Duration {
	var pace time.Duration
	if p == nil || p.done == nil {
		return 0
	}
	p.once.Do(func() { pace = p.done(fb) })
	return pace
}

// AdmitRequest is what an Admission knows about the request it admits.
type AdmitRequest struct {
	// Host is the request's lower-case host and port, the port always
	// present (the scheme's default when the URL names none), so that
	// https://api.example.com/ and https://api.example.com:443/ share
	// their limits: "api.example.com:443", "[2001:db8::1]:8080".
	Host string
	// Batch and BatchRate carry a per-batch rate (requests per second per
	// host, fleet-wide; 0: none) that the job's batch was enqueued with.
	Batch     string
	BatchRate float64
}

// Feedback tells an Admission what became of an admitted request, so that
// an adaptive limit can learn from it.
type Feedback struct {
	// Sent is false when nothing reached the host after all (breaker open,
	// address refused before connecting); such feedback says nothing about
	// the host and only frees the slot.
	Sent bool
	// Status is the HTTP status, 0 when no answer came.
	Status int
	// Latency is the attempt's duration: connecting, headers and body.
	Latency time.Duration
	// TimedOut: the attempt ran out of its own time (the host was too slow).
	TimedOut bool
	// Canceled: the caller's context ended (shutdown); says nothing about
	// the host.
	Canceled bool
	// Failed: no answer for another reason (connection refused or reset,
	// broken body).
	Failed bool
	// WantPace: the host answered 429, the request will be retried, and
	// the host named no Retry-After; Permit.Done answers the retry's delay.
	WantPace bool
}

// Overloaded reports whether the host signalled that it is at capacity:
// 429 Too Many Requests, 503 Service Unavailable, or an attempt that timed
// out.
func (f Feedback) Overloaded() bool {
	return f.Sent && !f.Canceled && (f.TimedOut || f.Status == 429 || f.Status == 503)
}

// NotAdmittedError is an Admission's "not now": the host's concurrency or
// rate limit is reached. The job waits Wait and costs nothing meanwhile.
type NotAdmittedError struct {
	Host   string
	Reason string // e.g. "concurrency limit 30 reached"
	Wait   time.Duration
	// AtCeiling: a concurrency limit at its configured ceiling refused, a
	// bound of this process rather than a sign the host is at capacity.
	AtCeiling bool
}

func (e *NotAdmittedError) Error() string {
	return fmt.Sprintf("host limit for %s: %s", e.Host, e.Reason)
}

// defaultAdmitWait is how long a job waits when an Admission refuses it
// with an error that names no wait.
const defaultAdmitWait = time.Second

// start gets r going: it asks the Admission, then takes one of the
// MaxRequests places. It returns the permit (nil without Admission), to be
// given its feedback, and the function that frees the place; or, when the
// request may not start, false and the Postponed outcome to return instead.
func (s *Sender) start(ctx context.Context, r request, host string) (*Permit, func(), Outcome, bool) {
	if r.halt != nil {
		// Checked first: an admission with room does not look at its
		// context, so a halt that came before would go unnoticed.
		if r.halt.Err() != nil {
			return nil, nil, haltedOutcome(), false
		}
		hctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		unhook := context.AfterFunc(r.halt, func() { cancel(ErrHalted) })
		defer unhook()
		permit, free, o, ok := s.startWaiting(hctx, r, host)
		if !ok && ctx.Err() == nil && errors.Is(context.Cause(hctx), ErrHalted) {
			o = haltedOutcome()
		}
		return permit, free, o, ok
	}
	return s.startWaiting(ctx, r, host)
}

// haltedOutcome is a request's outcome when its halt ended the wait.
func haltedOutcome() Outcome {
	return Outcome{Class: Postponed, Err: fmt.Errorf("not sent: %w", ErrHalted)}
}

// startWaiting is start without the halt: it waits while ctx lives.
func (s *Sender) startWaiting(ctx context.Context, r request, host string) (*Permit, func(), Outcome, bool) {
	var permit *Permit
	if r.admit {
		var o Outcome
		if permit, o = s.admit(ctx, AdmitRequest{Host: host, Batch: r.batch, BatchRate: r.batchRate}); o.Err != nil {
			return nil, nil, o, false
		}
	}
	if s.places == nil {
		return permit, func() {}, Outcome{}, true
	}
	waited, queued, err := s.takePlace(ctx)
	if err != nil {
		permit.Done(Feedback{})
		return nil, nil, Outcome{Class: Postponed, Err: fmt.Errorf("not sent: %w", err)}, false
	}
	free := func() { <-s.places }
	if queued && waited > s.tokenAge && permit != nil && permit.RateToken {
		// Its rate token is stale: tokens spent by requests that then
		// queued for places would go out together when places free up,
		// over the rate. Lose the token (the limit is under-used, never
		// exceeded) and come back later; the worker is saturated anyway.
		permit.Done(Feedback{})
		free()
		return nil, nil, Outcome{Class: Postponed, RetryAfter: defaultAdmitWait,
			Err: fmt.Errorf("not sent: %w", &noPlaceError{waited, s.cfg.MaxRequests})}, false
	}
	return permit, free, Outcome{}, true
}

// admit asks the Admission whether the request ar may start. It returns
// the permit, or the Postponed outcome (its Err set) to return instead.
func (s *Sender) admit(ctx context.Context, ar AdmitRequest) (*Permit, Outcome) {
	permit, err := s.cfg.Admission.Admit(ctx, ar)
	if err == nil {
		return permit, Outcome{}
	}
	if ctx.Err() != nil {
		return nil, Outcome{Class: Postponed, Err: fmt.Errorf("not sent: %w", callerError(ctx))}
	}
	wait := defaultAdmitWait
	var na *NotAdmittedError
	if errors.As(err, &na) && na.Wait > 0 {
		wait = na.Wait
	}
	return nil, Outcome{Class: Postponed, RetryAfter: wait, Err: fmt.Errorf("not sent: %w", err)}
}

// takePlace waits for one of the MaxRequests places, or returns why not;
// queued says whether it had to wait, and waited for how long.
func (s *Sender) takePlace(ctx context.Context) (waited time.Duration, queued bool, err error) {
	select {
	case s.places <- struct{}{}:
		return 0, false, nil
	default:
	}
	s.queued.Add(1)
	defer s.queued.Add(-1)
	start := time.Now()
	select {
	case s.places <- struct{}{}:
		return time.Since(start), true, nil
	case <-ctx.Done():
		return time.Since(start), true, callerError(ctx)
	}
}

// maxTokenAge is how long a rate-limited request may wait for a place
// after its rate token was taken and still be sent (Sender.tokenAge; tests
// lower it).
const maxTokenAge = 50 * time.Millisecond

// Queued is how many requests wait now for one of Config.MaxRequests
// places: above zero, this process sends as much as it may, and more
// would need more workers or a higher bound.
func (s *Sender) Queued() int { return int(s.queued.Load()) }

// report gives the permit its feedback on the attempt in out (its Class,
// Status, Attempted and Duration set; err its error) and sets
// out.RetryAfter for a retry: the host's Retry-After, or for a 429 without
// one the Admission's pace for the host.
func (s *Sender) report(ctx context.Context, permit *Permit, out *Outcome, resp *http.Response, err error) {
	var hinted bool
	if out.Class == Retryable && resp != nil {
		var d time.Duration
		if d, hinted = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); hinted {
			out.RetryAfter = min(d, s.cfg.MaxRetryAfter)
		}
	}
	var timedOut *TimeoutError
	fb := Feedback{
		Sent:     out.Attempted,
		Status:   out.Status,
		Latency:  out.Duration,
		TimedOut: ctx.Err() == nil && errors.As(err, &timedOut),
		Canceled: ctx.Err() != nil,
		Failed:   err != nil && out.Status == 0,
		WantPace: out.Class == Retryable && !hinted && out.Status == http.StatusTooManyRequests,
	}
	if pace := permit.Done(fb); fb.WantPace && pace > 0 {
		out.RetryAfter = min(pace, s.cfg.MaxRetryAfter)
	}
}
