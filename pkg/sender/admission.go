package sender

import (
	"context"
	"fmt"
	"time"
)

// Admission decides, before a job's request is sent, whether it may start
// now: per-host concurrency and rate limits live behind it (pkg/hostlimit).
// Send consults it after the request is built and before the breaker, so a
// job held back costs no HTTP request, no attempt and no breaker probe.
// Callbacks (Post) are not subject to it: they go to the job owner's own
// endpoint, not to the API being protected.
type Admission interface {
	// Admit asks to start one request. When it returns a nil error the
	// caller must call release exactly once, with what became of the
	// request (Feedback.Sent false when nothing was sent after all).
	//
	// A refusal is an error, usually a *NotAdmittedError whose Wait says
	// when to try again; Send turns any error into a Defer outcome. Admit
	// runs on the path of every job and holds its caller (but no request
	// place, see Config.MaxRequests) while it runs: it answers at once or
	// after a short, bounded wait (a fleet-wide token lease, a slot or
	// token due very soon), and gives up when ctx ends. Waiting for
	// capacity is what the deferral is for.
	Admit(ctx context.Context, r AdmitRequest) (release func(Feedback), err error)
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
}

// Overloaded reports whether the host signalled that it is at capacity:
// 429 Too Many Requests, 503 Service Unavailable, or an attempt that timed
// out.
func (f Feedback) Overloaded() bool {
	return f.Sent && !f.Canceled && (f.TimedOut || f.Status == 429 || f.Status == 503)
}

// NotAdmittedError is an Admission's refusal: the host's concurrency or
// rate limit is reached. The job waits Wait and costs nothing meanwhile.
type NotAdmittedError struct {
	Host   string
	Reason string // e.g. "concurrency limit 30 reached"
	Wait   time.Duration
}

func (e *NotAdmittedError) Error() string {
	return fmt.Sprintf("host limit for %s: %s", e.Host, e.Reason)
}

// Pacer is an Admission that knows when a host will have room again. When
// a host answers 429 without Retry-After, Send asks it for the retry's
// delay instead of leaving it to the caller's backoff: an adaptive limit
// that was just cut for that answer knows the host's pace, and a job sent
// back for a blind backoff would return after the host's other jobs (or
// alone, at the end of a batch, up to a backoff later). The attempt is
// spent all the same. A Pacer answers 0 when the refusal is not its
// limit's doing (a host out of quota refuses again and again), so that
// backoff slows those retries down.
type Pacer interface {
	// Pace is how long a job for host should wait before its retry; 0
	// leaves it to the caller's backoff.
	Pace(host string) time.Duration
}

// RateLimiter is an Admission that spends rate tokens on some requests.
// Such a request that then waits longer than maxTokenAge for one of
// Config.MaxRequests places is deferred instead of sent: tokens spent by
// requests that queued for places would go out together when places free
// up, over the rate. (Taking the place first would be exact, but a
// request waiting for its token would hold a place, and other hosts' jobs
// would queue behind a rate-limited host.)
type RateLimiter interface {
	// RateLimited reports whether Admit would take a rate token for r.
	RateLimited(r AdmitRequest) bool
}

func rateLimited(a Admission, r AdmitRequest) bool {
	rl, ok := a.(RateLimiter)
	return ok && rl.RateLimited(r)
}

// defaultAdmitWait is how long a job waits when an Admission refuses it
// with an error that names no wait.
const defaultAdmitWait = time.Second
