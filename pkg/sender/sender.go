package sender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/jetpost/jetpost/pkg/job"
)

// Class is what an attempt's outcome means for its job; the worker maps it
// to what happens next (store a result, try again later).
type Class int

const (
	// Succeeded: the target answered 2xx (or another non-error final status).
	Succeeded Class = iota
	// Retryable: a request was sent (or its connection tried) and failed in a
	// way that may pass later: network error, timeout, 408, 425, 429, 5xx.
	Retryable
	// Permanent: retrying cannot help: other 4xx, an address the guard
	// refused, a request that cannot be built, too many redirects.
	Permanent
	// Postponed: nothing was sent because the host's breaker turned the
	// request away (Err is then a *BreakerOpenError), or the host limits did
	// not admit it (a *NotAdmittedError), or the caller's context was
	// already done; try again after RetryAfter without spending an attempt.
	Postponed
)

func (c Class) String() string {
	switch c {
	case Succeeded:
		return "succeeded"
	case Retryable:
		return "retryable"
	case Permanent:
		return "permanent"
	case Postponed:
		return "postponed"
	}
	return "unknown"
}

// Outcome is what one call to Send did.
type Outcome struct {
	Class Class
	// Attempted is true when an HTTP request was started (counts toward the
	// job's attempts). False for Postponed and for refusals before any request.
	Attempted     bool
	Status        int // HTTP status, 0 if no response
	Body          []byte
	BodyTruncated bool
	Duration      time.Duration // of this attempt
	// RetryAfter is the delay the target asked for (Retry-After, capped) on
	// Retryable, or for a 429 without one the host's pace as the admission's
	// Permit answered it; on Postponed, how long to wait before trying the
	// job again (for a breaker's turn-away, the most: until it lets a probe
	// through). Zero on Retryable means "no hint: use the backoff policy".
	RetryAfter time.Duration
	// Err says why the attempt did not succeed; nil on Succeeded. Secrets are
	// never part of it.
	Err error
}

// Config configures a Sender. Zero values take the documented defaults.
type Config struct {
	Timeout          time.Duration // per attempt when the job sets none; default 30s
	MaxResponseBytes int64         // response body kept; default 64 KiB
	MaxConnsPerHost  int           // idle connections kept per host; default 64
	MaxRedirects     int           // default 5; <0 means follow none
	MaxRetryAfter    time.Duration // cap on Retry-After; default 5m
	// MaxResponseHeaderBytes bounds the response headers read (net/http
	// reads up to 10 MiB otherwise); an answer with more fails as
	// Permanent. Default 64 KiB.
	MaxResponseHeaderBytes int64
	// RetryStatuses are the HTTP statuses that are retried; nil means the
	// default 408, 425, 429 and 500-599. Every other status >= 400 is permanent.
	RetryStatuses StatusSet
	// IdempotencyHeader carries the job id on every request so targets can
	// drop at-least-once repeats; "" disables it.
	IdempotencyHeader string
	UserAgent         string // default "jetpost/1"
	// SecretHeaders names the headers whose values are secrets besides the
	// built-in Authorization, Proxy-Authorization, Cookie and Set-Cookie
	// (job.IsSecretHeader). A redirect that leaves the job's origin drops
	// them all, and Referer.
	SecretHeaders []string

	Breaker Breaker

	// Admission, if set, is asked before every request, a job's or a
	// callback's, whether it may start now; a refusal defers it without
	// spending an attempt. See Admission.
	Admission Admission

	// MaxRequests bounds the requests in flight at once across every host,
	// jobs and callbacks alike; 0 means no bound. A request takes its place
	// after Admission has let it start, so a job waiting for its host's
	// capacity (in Admission) holds none: a caller may run more Sends than
	// MaxRequests, some waiting for a host, while the hosts with room use
	// every place.
	MaxRequests int

	// AllowedNetworks may be dialled even though they are loopback, private,
	// link-local or otherwise refused by default.
	AllowedNetworks []netip.Prefix

	// OnBreakerChange, if set, is told every breaker transition (metrics,
	// logs, tests). It runs synchronously while that breaker's lock is held:
	// keep it short and do not call Send or Post from it (BreakerStates is
	// safe to call).
	OnBreakerChange func(host string, from, to job.BreakerState)

	// WrapTransport, if set, wraps the transport every request goes
	// through (tracing: a client span and traceparent per request).
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Breaker configures the per-host circuit breakers. A breaker opens on a
// failure rate over a rolling window: at least Failures failed answers in
// Window, and at least FailureRatio of the answers in it.
type Breaker struct {
	Failures         uint32        // failures in the window before the ratio counts; default 10
	FailureRatio     float64       // share of failed answers in the window that opens it; default 0.5
	Window           time.Duration // rolling window of answers counted; default 1m
	OpenTimeout      time.Duration // how long it stays open before a probe; default 30s
	HalfOpenRequests uint32        // probes allowed while half-open; default 1
}

// DefaultIdempotencyHeader is the conventional header for the job id
// (IETF draft "The Idempotency-Key HTTP Header Field"). Config leaves it to
// the caller because "" must keep meaning "off".
const DefaultIdempotencyHeader = "Idempotency-Key"

// Defaults applied by New to zero Config fields.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultMaxResponseBytes = 64 << 10
	DefaultMaxHeaderBytes   = 64 << 10
	DefaultMaxConnsPerHost  = 64
	DefaultMaxRedirects     = 5
	DefaultMaxRetryAfter    = 5 * time.Minute
	DefaultUserAgent        = "jetpost/1"
	DefaultBreakerFailures  = 10
	DefaultBreakerRatio     = 0.5
	DefaultBreakerWindow    = time.Minute
	DefaultBreakerOpen      = 30 * time.Second
	DefaultBreakerHalfOpen  = 1
)

const (
	// drainBytes is how much of an unread response tail we read to keep a
	// keep-alive connection reusable; past that, closing it is cheaper than
	// downloading a body nobody keeps.
	drainBytes = 4 << 10
	// dialTimeout and tlsTimeout bound the connection phases on their own,
	// so a job with a long timeout does not spend it all on a dead address.
	dialTimeout = 10 * time.Second
	tlsTimeout  = 10 * time.Second
)

// Sender makes single HTTP attempts for jobs. It is safe for concurrent use;
// one Sender (one connection pool, one set of breakers) serves a whole worker.
type Sender struct {
	cfg       Config
	transport *http.Transport
	rt        http.RoundTripper // transport, wrapped (Config.WrapTransport)
	breakers  breakers
	// places bounds the requests in flight (Config.MaxRequests); nil:
	// unbounded.
	places   chan struct{}
	queued   atomic.Int64  // requests waiting for a place now
	tokenAge time.Duration // maxTokenAge
	// rnd jitters Postponed delays; a field so tests can pin it.
	rnd func() float64
}

// New applies the documented defaults to cfg, validates it and builds the
// shared transport.
func New(cfg Config) (*Sender, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	s := &Sender{
		cfg:       cfg,
		transport: newTransport(cfg),
		breakers:  breakers{settings: cfg.Breaker, onChange: cfg.OnBreakerChange},
		rnd:       rand.Float64,
		tokenAge:  maxTokenAge,
	}
	s.rt = s.transport
	if cfg.WrapTransport != nil {
		s.rt = cfg.WrapTransport(s.transport)
	}
	if cfg.MaxRequests > 0 {
		s.places = make(chan struct{}, cfg.MaxRequests)
	}
	return s, nil
}

func withDefaults(cfg Config) (Config, error) {
	switch {
	case cfg.Timeout < 0:
		return cfg, fmt.Errorf("sender: timeout %v is negative", cfg.Timeout)
	case cfg.MaxResponseBytes < 0:
		return cfg, fmt.Errorf("sender: max response bytes %d is negative", cfg.MaxResponseBytes)
	case cfg.MaxResponseHeaderBytes < 0:
		return cfg, fmt.Errorf("sender: max response header bytes %d is negative", cfg.MaxResponseHeaderBytes)
	case cfg.MaxRequests < 0:
		return cfg, fmt.Errorf("sender: max requests %d is negative", cfg.MaxRequests)
	case cfg.MaxConnsPerHost < 0:
		return cfg, fmt.Errorf("sender: max connections per host %d is negative", cfg.MaxConnsPerHost)
	case cfg.MaxRetryAfter < 0:
		return cfg, fmt.Errorf("sender: max Retry-After %v is negative", cfg.MaxRetryAfter)
	case cfg.Breaker.OpenTimeout < 0:
		return cfg, fmt.Errorf("sender: breaker open timeout %v is negative", cfg.Breaker.OpenTimeout)
	case cfg.Breaker.Window < 0:
		return cfg, fmt.Errorf("sender: breaker window %v is negative", cfg.Breaker.Window)
	case !(cfg.Breaker.FailureRatio >= 0 && cfg.Breaker.FailureRatio <= 1):
		return cfg, fmt.Errorf("sender: breaker failure ratio %v is not between 0 and 1", cfg.Breaker.FailureRatio)
	case cfg.IdempotencyHeader != "" && !job.ValidToken(cfg.IdempotencyHeader):
		return cfg, fmt.Errorf("sender: idempotency header %q is not a valid header name", cfg.IdempotencyHeader)
	case !job.ValidHeaderValue(cfg.UserAgent):
		return cfg, fmt.Errorf("sender: user agent %q contains a control character", cfg.UserAgent)
	}
	for _, p := range cfg.AllowedNetworks {
		if !p.IsValid() {
			return cfg, fmt.Errorf("sender: allowed network %v is not a valid prefix", p)
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.MaxResponseHeaderBytes == 0 {
		cfg.MaxResponseHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxConnsPerHost == 0 {
		cfg.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	switch {
	case cfg.MaxRedirects == 0:
		cfg.MaxRedirects = DefaultMaxRedirects
	case cfg.MaxRedirects < 0:
		cfg.MaxRedirects = -1
	}
	if cfg.MaxRetryAfter == 0 {
		cfg.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if cfg.RetryStatuses == nil {
		cfg.RetryStatuses = DefaultRetryStatuses()
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	if cfg.Breaker.Failures == 0 {
		cfg.Breaker.Failures = DefaultBreakerFailures
	}
	if cfg.Breaker.FailureRatio == 0 {
		cfg.Breaker.FailureRatio = DefaultBreakerRatio
	}
	if cfg.Breaker.Window == 0 {
		cfg.Breaker.Window = DefaultBreakerWindow
	}
	if cfg.Breaker.OpenTimeout == 0 {
		cfg.Breaker.OpenTimeout = DefaultBreakerOpen
	}
	if cfg.Breaker.HalfOpenRequests == 0 {
		cfg.Breaker.HalfOpenRequests = DefaultBreakerHalfOpen
	}
	// Normalise so that ::ffff:10.0.0.0/104 and 10.0.0.0/8 mean the same to
	// the guard, which unmaps addresses before matching.
	nets := make([]netip.Prefix, len(cfg.AllowedNetworks))
	for i, p := range cfg.AllowedNetworks {
		nets[i] = unmapPrefix(p)
	}
	cfg.AllowedNetworks = nets
	return cfg, nil
}

func newTransport(cfg Config) *http.Transport {
	dialer := &net.Dialer{
		Timeout:   dialTimeout,
		KeepAlive: 30 * time.Second,
		// The guard runs on the address actually being connected to, after
		// DNS, for every dial including redirects and Happy Eyeballs
		// fallbacks, so a name that resolves (or re-resolves) to an internal
		// address cannot slip through.
		Control: guard(cfg.AllowedNetworks),
	}
	return &http.Transport{
		// No proxy: a proxy would make the guarded dial go to the proxy, not
		// to the target, and the guard would check the wrong address.
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   tlsTimeout,
		ExpectContinueTimeout: time.Second,
		// Idle pool per host as large as the in-flight bound, so a burst to
		// one API reuses its connections instead of re-dialling and leaving
		// sockets in TIME_WAIT. The global cap bounds open descriptors when a
		// batch touches many distinct hosts.
		MaxIdleConnsPerHost: cfg.MaxConnsPerHost,
		MaxIdleConns:        max(1024, 4*cfg.MaxConnsPerHost),
		IdleConnTimeout:     90 * time.Second,
		// A hostile host could otherwise make every attempt read 10 MiB
		// of headers (net/http's default), which no result keeps.
		MaxResponseHeaderBytes: cfg.MaxResponseHeaderBytes,
	}
}

// Close releases idle connections. In-flight requests are not affected; call
// it once nothing sends any more.
func (s *Sender) Close() { s.transport.CloseIdleConnections() }

// request is what one attempt sends, whether it came from a job or is a
// result callback.
type request struct {
	method      string
	url         string
	headers     map[string]string
	body        []byte
	contentType string // implied by the body; a header in headers wins
	idemKey     string
	timeout     time.Duration
	// admit: ask Config.Admission first.
	admit     bool
	batch     string
	batchRate float64
	// halt, if not nil, ends the waits before the request (SendUntil).
	halt context.Context
}

// Send makes one attempt at delivering j. It never retries; the Outcome says
// whether and when the caller should.
func (s *Sender) Send(ctx context.Context, j *job.Job) Outcome { return s.SendUntil(ctx, j, nil) }

// ErrHalted is why a request did not start: the halt context given to
// SendUntil ended while it waited for admission or a place.
var ErrHalted = errors.New("its batch stopped before the request started")

// SendUntil is Send, but halt, when it ends while the request waits for
// its host's admission or a request place, ends that wait: the request is
// not sent and the Outcome is Postponed with ErrHalted. A request that
// started is not cut short. halt may be nil.
func (s *Sender) SendUntil(ctx context.Context, j *job.Job, halt context.Context) Outcome {
	body, ctype := j.Body()
	timeout := s.cfg.Timeout
	if j.Timeout > 0 {
		timeout = time.Duration(j.Timeout)
	}
	return s.do(ctx, request{
		method:      j.Method,
		url:         j.RequestURL(),
		headers:     j.Headers,
		body:        body,
		contentType: ctype,
		idemKey:     j.ID,
		timeout:     timeout,
		admit:       s.cfg.Admission != nil,
		batch:       j.Batch,
		batchRate:   j.Rate,
		halt:        halt,
	})
}

// Callback is a result POST: where to, what, and for which batch.
type Callback struct {
	URL  string
	Body []byte // JSON
	// Key is sent in the configured idempotency header so receivers can
	// drop repeats.
	Key string
	// Batch and BatchRate are the job's: a batch's rate (enqueue --rate)
	// bounds its callbacks to a host as it bounds its requests.
	Batch     string
	BatchRate float64
}

// Post sends a result callback as a JSON POST with the same guard, host
// limits (Admission), breaker and classification as Send: a callback aimed
// at a host counts against that host's limits like any job's request, and
// one the limits turn away is Postponed.
func (s *Sender) Post(ctx context.Context, cb Callback) Outcome {
	return s.do(ctx, request{
		method:      http.MethodPost,
		url:         cb.URL,
		body:        cb.Body,
		contentType: "application/json",
		idemKey:     cb.Key,
		timeout:     s.cfg.Timeout,
		admit:       s.cfg.Admission != nil,
		batch:       cb.Batch,
		batchRate:   cb.BatchRate,
	})
}

func (s *Sender) do(ctx context.Context, r request) Outcome {
	if ctx.Err() != nil {
		// Shutdown before anything was sent: hand the job back untouched.
		return Outcome{Class: Postponed, Err: fmt.Errorf("not sent: %w", callerError(ctx))}
	}
	req, err := s.build(ctx, r)
	if err != nil {
		return Outcome{Class: Permanent, Err: fmt.Errorf("building request: %w", err)}
	}
	// One key per endpoint for the breaker and the limits alike:
	// https://api.example.com and https://api.example.com:443 are one host.
	host := job.HostKey(req.URL)
	// An open breaker turns the request away before it asks for its host's
	// capacity or a place: one that waited there only to be turned away
	// would hold room that jobs of healthy hosts could use, and its
	// deferral would read as a want of this worker's room, not a refusal
	// by its host (what readiness tells apart). A half-open breaker is
	// asked after admission, where its probe is let through.
	if hb := s.breakers.open(host); hb != nil {
		return s.breakers.turnAway(host, hb, gobreaker.ErrOpenState, s.rnd)
	}
	permit, free, o, ok := s.start(ctx, r, host)
	if !ok {
		return o
	}
	defer free()
	if ctx.Err() != nil {
		// Shutdown while waiting: admitted, but nothing was sent.
		permit.Done(Feedback{})
		return Outcome{Class: Postponed, Err: fmt.Errorf("not sent: %w", callerError(ctx))}
	}
	// The attempt's own time starts now: waiting for the host's capacity
	// or a place is not the target being slow.
	actx, cancel := context.WithTimeoutCause(ctx, r.timeout, &TimeoutError{After: r.timeout})
	defer cancel()
	req = req.WithContext(actx)
	hb := s.breakers.get(host)
	// Allowed while half-open, this request is the probe: its outcome is
	// this job's attempt and decides the breaker.
	done, err := hb.cb.Allow()
	if err != nil {
		permit.Done(Feedback{})
		return s.breakers.turnAway(host, hb, err, s.rnd)
	}

	redirects := 0
	client := s.client(&redirects)
	start := time.Now()
	resp, err := client.Do(req)
	var out Outcome
	switch {
	case err != nil:
		err = s.headerLimit(describe(req, redirects, err))
	default:
		out.Body, out.BodyTruncated, err = readBody(resp, s.cfg.MaxResponseBytes)
		if err != nil {
			err = fmt.Errorf("%s %s: reading response body (status %d): %w",
				req.Method, job.RedactURL(req.URL.String()), resp.StatusCode, err)
		}
	}
	out.Duration = time.Since(start)
	if resp != nil {
		out.Status = resp.StatusCode
	}

	err = whose(ctx, actx, err)

	c := s.classify(ctx, out.Status, err)
	done(c.breaker)
	out.Class = c.class
	// A refused first dial sent nothing; a refused redirect target comes
	// after a request the first host did receive.
	out.Attempted = !c.refused || redirects > 0
	s.report(ctx, permit, &out, resp, err)
	if out.Class == Succeeded {
		err = nil
	} else if err == nil {
		err = fmt.Errorf("%s %s: status %d %s", req.Method, job.RedactURL(req.URL.String()), out.Status, http.StatusText(out.Status))
	}
	out.Err = err
	return out
}

// build turns r into an *http.Request, refusing anything the transport would
// reject later, so such jobs fail as Permanent instead of being retried.
func (s *Sender) build(ctx context.Context, r request) (*http.Request, error) {
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	if !job.ValidToken(method) {
		return nil, fmt.Errorf("method %q is not valid", method)
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.url, body)
	if err != nil {
		// url.Error repeats the URL, userinfo included; keep only the reason.
		return nil, fmt.Errorf("url is not valid: %w", unwrapURLError(err))
	}
	if u := req.URL; u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("url %s: scheme %q is not http or https", job.RedactURL(u.String()), u.Scheme)
	} else if u.Hostname() == "" {
		return nil, fmt.Errorf("url %s has no host", job.RedactURL(u.String()))
	}
	for k, v := range r.headers {
		if !job.ValidToken(k) {
			return nil, fmt.Errorf("header name %q is not valid", k)
		}
		if !job.ValidHeaderValue(v) {
			// The value may be a secret: name the header, never the value.
			return nil, fmt.Errorf("header %q has a control character in its value", k)
		}
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if r.contentType != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if h := s.cfg.IdempotencyHeader; h != "" && r.idemKey != "" && req.Header.Get(h) == "" {
		req.Header.Set(h, r.idemKey)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", s.cfg.UserAgent)
	}
	return req, nil
}

// readBody keeps at most limit bytes of the body and closes it.
func readBody(resp *http.Response, limit int64) (body []byte, truncated bool, err error) {
	defer resp.Body.Close()
	size := int64(512)
	if resp.ContentLength >= 0 {
		size = min(resp.ContentLength, limit) + 1
	}
	buf := make([]byte, 0, size)
	lr := io.LimitedReader{R: resp.Body, N: limit + 1}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, rerr := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return buf, false, rerr
		}
	}
	if int64(len(buf)) > limit {
		// Bounded drain: enough to reuse the connection when the tail is
		// short, never a download of a huge body we would throw away.
		_, _ = io.CopyN(io.Discard, resp.Body, drainBytes)
		return buf[:limit], true, nil
	}
	return buf, false, nil
}

// TimeoutError is the cause when an attempt ran out of its own time (as
// opposed to the caller's context ending). It covers connecting, the
// headers and reading the body.
type TimeoutError struct{ After time.Duration }

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("attempt timed out after %v (connect, headers and body)", e.After)
}

// Timeout reports true, as net.Error does for timeouts.
func (e *TimeoutError) Timeout() bool { return true }

// Unwrap lets errors.Is(err, context.DeadlineExceeded) hold.
func (e *TimeoutError) Unwrap() error { return context.DeadlineExceeded }

// callerError says why the caller's context ended, keeping both ctx.Err()
// and a custom cause (context.WithCancelCause) reachable with errors.Is.
func callerError(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause == nil || cause == err {
		return fmt.Errorf("cancelled by caller: %w", err)
	}
	return fmt.Errorf("cancelled by caller: %w: %w", err, cause)
}

// because adds each reason to err unless err already matches it (net/http
// sometimes returns the context's cause itself, sometimes only "context
// canceled").
func because(err error, reasons ...error) error {
	for _, r := range reasons {
		if r != nil && !errors.Is(err, r) {
			err = fmt.Errorf("%w: %w", err, r)
		}
	}
	return err
}

// client is the HTTP client of one attempt; it counts the redirects it
// follows into *redirects.
func (s *Sender) client(redirects *int) http.Client {
	if s.cfg.MaxRedirects < 0 {
		return http.Client{
			Transport:     s.rt,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return http.Client{
		Transport: s.rt,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			*redirects++
			if len(via) > s.cfg.MaxRedirects {
				return fmt.Errorf("%w (limit %d)", errTooManyRedirects, max(s.cfg.MaxRedirects, 0))
			}
			if u := req.URL; u.Scheme != "http" && u.Scheme != "https" {
				return fmt.Errorf("%w: scheme %q is not http or https", errUnfollowableRedirect, u.Scheme)
			} else if u.Hostname() == "" {
				return fmt.Errorf("%w: it names no host", errUnfollowableRedirect)
			}
			if leftOrigin(req, via) {
				dropSecrets(req.Header, s.cfg.SecretHeaders)
			}
			return nil
		},
	}
}

// leftOrigin reports whether a redirect chain, up to and including req,
// has left the origin (scheme, host and port) of its first request. Once
// it has, it stays left: a host that redirects back to the first one chose
// where on it the request lands.
func leftOrigin(req *http.Request, via []*http.Request) bool {
	first := origin(via[0].URL)
	if origin(req.URL) != first {
		return true
	}
	for _, r := range via[1:] {
		if origin(r.URL) != first {
			return true
		}
	}
	return false
}

// origin is a URL's scheme and host key; the port is part of it because
// two ports of one host may be two services run by different people.
func origin(u *url.URL) string { return strings.ToLower(u.Scheme) + "://" + job.HostKey(u) }

// dropSecrets removes from h (a redirect's headers, copied by net/http from
// the first request) Referer, which names the previous URL with its query,
// and every secret header. net/http itself drops only its own list, and
// only when the host name changes, not the port.
func dropSecrets(h http.Header, secret []string) {
	for k := range h {
		if strings.EqualFold(k, "Referer") || job.IsSecretHeader(k, secret) {
			delete(h, k)
		}
	}
}

// headerLimit marks err as an answer whose headers exceeded
// Config.MaxResponseHeaderBytes. net/http has no typed error for it, in
// either protocol, only these texts.
func (s *Sender) headerLimit(err error) error {
	msg := err.Error()
	if !strings.Contains(msg, "server response headers exceeded") &&
		!strings.Contains(msg, "response header list larger than advertised limit") {
		return err
	}
	return fmt.Errorf("%w (%w: over %d bytes, JETPOST_MAX_RESPONSE_HEADER_BYTES)", err, errHeaderLimit, s.cfg.MaxResponseHeaderBytes)
}

// whose says whose context ended an attempt's err: the caller's (ctx) or
// the attempt's own time (actx). Errors from the transport say "context
// canceled" or "deadline exceeded" without telling; it decides between
// "shutdown" and "the target was too slow".
func whose(ctx, actx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%w (cancelled by caller)", because(err, ctx.Err(), context.Cause(ctx)))
	case actx.Err() != nil:
		return because(err, context.Cause(actx))
	}
	return err
}

// describe rewrites a client error so that it names the request with its
// URL redacted (job.RedactURL): errors end up in results, dead letters and
// logs, and net/http's own *url.Error would show the user name and query.
func describe(req *http.Request, redirects int, err error) error {
	ue, ok := err.(*url.Error)
	if !ok {
		return fmt.Errorf("%s %s: %w", req.Method, job.RedactURL(req.URL.String()), err)
	}
	if redirects > 0 && ue.URL != "" {
		// After a redirect ue.URL is the Location that failed.
		return fmt.Errorf("%s %s: redirected to %s: %w", req.Method, job.RedactURL(req.URL.String()), job.RedactURL(ue.URL), ue.Err)
	}
	return fmt.Errorf("%s %s: %w", req.Method, job.RedactURL(req.URL.String()), ue.Err)
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
