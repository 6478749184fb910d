package target

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetpost/jetpost/pkg/retry"
)

// Defaults and limits. The limits keep a typo in a demo file (size=1e12,
// latency=100h) from exhausting the machine that runs the benchmark.
const (
	DefaultFailStatus = http.StatusServiceUnavailable
	DefaultKeyHeader  = "Idempotency-Key"

	MaxLatency     = 10 * time.Minute
	MaxSize        = 64 << 20 // response body bytes a size knob may ask for
	MaxRequestBody = 64 << 20 // request body bytes read (and counted) per request
)

// Options configure a Target. The zero value is a fast, always-healthy
// target. Query-string knobs on a request override the matching option for
// that request only.
type Options struct {
	// Latency is added to every counted request before it is answered;
	// Jitter adds a uniformly drawn extra delay in [0, Jitter].
	Latency time.Duration
	Jitter  time.Duration
	// FailRate is the probability in [0, 1] that a request is answered with
	// FailStatus instead of 2xx.
	FailRate float64
	// FailStatus answers injected failures; 0 means DefaultFailStatus (503).
	FailStatus int
	// Seed makes FailRate and Jitter draws reproducible for a sequential
	// client (concurrent clients draw in arrival order, which varies).
	Seed int64
	// KeyHeader names the header that carries a job's identity; "" means
	// DefaultKeyHeader. It must match the sender's idempotency header.
	KeyHeader string
	// Capacity, when above 0, makes the target an API that limits
	// concurrency: a request arriving while Capacity others are in flight
	// is answered 429 at once, without latency (with a Retry-After only if
	// the retry_after knob asks for one).
	Capacity int
	// RecordArrivals keeps the arrival time of every counted request, for
	// Arrivals: the rate a target saw over time. Off by default, since a
	// benchmark target may see millions.
	RecordArrivals bool
	// OnRequest, when set, runs for every counted request after it has been
	// counted in flight and before anything else happens to it. Tests use it
	// to hold requests (block until released, or until r.Context() ends) and
	// observe in-flight counts without sleeping. It runs on the request's
	// goroutine, so it must not block forever.
	OnRequest func(r *http.Request)
}

// Validate reports every option out of range, for command lines that should
// refuse a bad flag instead of silently clamping it as New does.
func (o Options) Validate() error {
	var errs []error
	if o.Latency < 0 || o.Latency > MaxLatency {
		errs = append(errs, fmt.Errorf("latency %s is out of range [0, %s]", o.Latency, MaxLatency))
	}
	if o.Jitter < 0 || o.Jitter > MaxLatency {
		errs = append(errs, fmt.Errorf("jitter %s is out of range [0, %s]", o.Jitter, MaxLatency))
	}
	if math.IsNaN(o.FailRate) || o.FailRate < 0 || o.FailRate > 1 {
		errs = append(errs, fmt.Errorf("fail rate %v is out of range [0, 1]", o.FailRate))
	}
	if o.FailStatus != 0 && !validFailStatus(o.FailStatus) {
		errs = append(errs, fmt.Errorf("fail status %d is not in 400-599", o.FailStatus))
	}
	if o.Capacity < 0 {
		errs = append(errs, fmt.Errorf("capacity %d is negative", o.Capacity))
	}
	return errors.Join(errs...)
}

// normalized fills defaults and clamps what Validate would refuse, so a
// Target never has to check its options on the hot path.
func (o Options) normalized() Options {
	if o.FailStatus == 0 || !validFailStatus(o.FailStatus) {
		o.FailStatus = DefaultFailStatus
	}
	if o.KeyHeader == "" {
		o.KeyHeader = DefaultKeyHeader
	}
	o.Latency = clampDuration(o.Latency)
	o.Jitter = clampDuration(o.Jitter)
	switch {
	case math.IsNaN(o.FailRate) || o.FailRate < 0:
		o.FailRate = 0
	case o.FailRate > 1:
		o.FailRate = 1
	}
	return o
}

func validFailStatus(s int) bool { return s >= 400 && s <= 599 }

func clampDuration(d time.Duration) time.Duration {
	return min(max(d, 0), MaxLatency)
}

// Target is an http.Handler that answers like a configurable third-party
// API and counts what it sees. It is safe for concurrent use.
type Target struct {
	opts     atomic.Pointer[Options]
	inFlight atomic.Int64
	// cur is the current counting period; Reset swaps in a fresh one so a
	// request that straddles a Reset records into the period it started in
	// instead of leaving half its counts in each.
	cur atomic.Pointer[period]

	// rngMu guards the random sources: rand.Rand is not safe for concurrent
	// use, and one lock per draw is cheap next to an HTTP round trip.
	rngMu sync.Mutex
	// Two sources so that turning jitter on does not change which requests
	// fail for a given seed.
	failRNG   *rand.Rand
	jitterRNG *rand.Rand
}

// New returns a Target with the given options. Out-of-range options are
// clamped (use Options.Validate to refuse them instead).
func New(opts Options) *Target {
	t := &Target{}
	o := opts.normalized()
	t.opts.Store(&o)
	t.cur.Store(newPeriod(0))
	t.reseed(o.Seed)
	return t
}

// SetOptions replaces the options for requests that arrive from now on;
// requests already in flight finish under the options they started with. A
// changed Seed restarts the random sequences.
func (t *Target) SetOptions(opts Options) {
	o := opts.normalized()
	old := t.opts.Swap(&o)
	if old.Seed != o.Seed {
		t.reseed(o.Seed)
	}
}

// Options returns the options in force (with defaults filled in).
func (t *Target) Options() Options { return *t.opts.Load() }

// Reset starts a new counting period: counters, per-key state and fail_first
// sequences start over and the random sequences restart from the seed, so a
// test can reuse one target. Requests in flight stay counted in InFlight
// (which is a gauge of now, not a tally) and MaxInFlight restarts from it.
func (t *Target) Reset() {
	t.cur.Store(newPeriod(t.inFlight.Load()))
	t.reseed(t.opts.Load().Seed)
}

func (t *Target) reseed(seed int64) {
	t.rngMu.Lock()
	defer t.rngMu.Unlock()
	t.failRNG = rand.New(rand.NewPCG(uint64(seed), 1))
	t.jitterRNG = rand.New(rand.NewPCG(uint64(seed), 2))
}

func (t *Target) drawFail() float64 {
	t.rngMu.Lock()
	defer t.rngMu.Unlock()
	return t.failRNG.Float64()
}

func (t *Target) drawJitter(upTo time.Duration) time.Duration {
	t.rngMu.Lock()
	defer t.rngMu.Unlock()
	return time.Duration(t.jitterRNG.Int64N(int64(upTo) + 1))
}

// ServeHTTP answers GET /stats and POST /reset itself (not counted) and
// treats every other request as a job's delivery.
func (t *Target) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/stats":
		t.serveStats(w, r)
	case "/reset":
		t.serveReset(w, r)
	default:
		t.serveJob(w, r)
	}
}

func (t *Target) serveStats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "use GET /stats"})
		return
	}
	// Keys are opt-in: a benchmark target may hold millions of them.
	if v := r.URL.Query().Get("keys"); v != "" && v != "0" && v != "false" {
		writeJSON(w, http.StatusOK, struct {
			Stats
			Keys map[string]KeyStats `json:"keys"`
		}{t.Stats(), t.Keys()})
		return
	}
	writeJSON(w, http.StatusOK, t.Stats())
}

func (t *Target) serveReset(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "use POST /reset"})
		return
	}
	t.Reset()
	w.WriteHeader(http.StatusNoContent)
}

// echo is the body of a 2xx answer: enough for a test or a demo reader to
// see that the request arrived as sent.
type echo struct {
	Method        string `json:"method"`
	Path          string `json:"path"`
	Key           string `json:"key"`
	ReceivedBytes int64  `json:"received_bytes"`
	// Attempt is this request's number among those with the same key (or,
	// without a key, the same method and URL) when that is tracked, else 0.
	Attempt int `json:"attempt"`
}

type failure struct {
	Error   string `json:"error"`
	Status  int    `json:"status"`
	Key     string `json:"key,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
}

type errorBody struct {
	Error string `json:"error"`
}

func (t *Target) serveJob(w http.ResponseWriter, r *http.Request) {
	p := t.cur.Load()
	p.requests.Add(1)
	n := t.inFlight.Add(1)
	p.noteInFlight(n)
	// The slot is given back just before the answer starts to leave, not
	// when the handler returns: a client that bounds its in-flight requests
	// may start the next one as soon as it has read this answer, and that
	// must never be measured as one request over its bound. The defer covers
	// every other way out (a client that gave up, a panic).
	left := false
	leave := func() {
		if !left {
			left = true
			t.inFlight.Add(-1)
		}
	}
	defer leave()

	c := t.receive(w, r, p, n)
	// A client that gave up is recorded as such (status 0) and its slot
	// freed at once, rather than when its latency would have ended.
	giveUp := func() {
		leave()
		p.canceled.Add(1)
		p.finishKey(c.ks, 0)
	}
	if c.readErr != nil && r.Context().Err() != nil {
		giveUp() // went away mid-body: not a bad request
		return
	}
	status, errMsg, injected := t.decide(&c)
	if c.knobErr == nil && c.readErr == nil && !c.overCapacity {
		delay := c.k.latency
		if c.k.jitter > 0 {
			delay += t.drawJitter(c.k.jitter)
		}
		// Honouring the context matters: a request abandoned by its client
		// must not hold a counted slot for the rest of its latency.
		if retry.Sleep(r.Context(), delay) != nil {
			giveUp()
			return
		}
	}

	// Count before answering: a client that reads Stats right after its
	// response must see that response counted.
	leave()
	p.countStatus(status)
	p.finishKey(c.ks, status)

	if status >= 400 && c.k.retryAfter != "" && c.knobErr == nil {
		w.Header().Set("Retry-After", c.k.retryAfter)
	}
	size := int64(-1)
	if c.knobErr == nil {
		size = c.k.size
	}
	writeBody(w, r, status, c.body(r, status, errMsg, injected), size)
}

// call is what serveJob learned of a request before answering it.
type call struct {
	key          string
	k            knobs
	knobErr      error
	received     int64
	readErr      error
	ks           *keyState
	attempt      int
	overCapacity bool
	capacity     int
}

// receive reads the request (n is the requests in flight, this one
// included) and enters it in p's counts.
func (t *Target) receive(w http.ResponseWriter, r *http.Request, p *period, n int64) call {
	opts := t.opts.Load()
	if opts.RecordArrivals {
		p.noteArrival(time.Now())
	}
	if opts.OnRequest != nil {
		opts.OnRequest(r)
	}
	c := call{
		overCapacity: opts.Capacity > 0 && n > int64(opts.Capacity),
		capacity:     opts.Capacity,
		key:          r.Header.Get(opts.KeyHeader),
	}
	c.k, c.knobErr = parseKnobs(r.URL.Query(), opts)
	c.received, c.readErr = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, MaxRequestBody))
	p.receivedBytes.Add(c.received)

	// fail_first needs a per-request number even without a key; otherwise
	// only keyed requests pay for the map.
	switch {
	case c.key != "":
		c.ks, c.attempt = p.enterKey(c.key)
	case c.knobErr == nil && c.k.failFirst > 0:
		c.attempt = p.enterUnkeyed(r.Method + " " + r.URL.RequestURI())
	}
	return c
}

// decide picks the status to answer c with, the error to tell, and whether
// the failure is an injected one.
func (t *Target) decide(c *call) (status int, errMsg string, injected bool) {
	switch {
	case c.knobErr != nil:
		return http.StatusBadRequest, c.knobErr.Error(), false
	case c.readErr != nil:
		status = http.StatusBadRequest
		if mbe := (*http.MaxBytesError)(nil); errors.As(c.readErr, &mbe) {
			status = http.StatusRequestEntityTooLarge
		}
		return status, "reading request body: " + c.readErr.Error(), false
	case c.overCapacity:
		return http.StatusTooManyRequests, "", false
	case c.k.status != 0:
		// "Always that status": a host-wide FailRate must not turn a
		// deliberate 404 into a flaky 503.
		return c.k.status, "", false
	case c.k.failFirst > 0 && c.attempt <= c.k.failFirst:
		return c.k.failStatus, "", true
	case c.k.failRate > 0 && t.drawFail() < c.k.failRate:
		return c.k.failStatus, "", true
	default:
		return http.StatusOK, "", false
	}
}

// body is the JSON answer to c: an echo on success, else what failed.
func (c *call) body(r *http.Request, status int, errMsg string, injected bool) any {
	switch {
	case status >= 200 && status < 300:
		return echo{Method: r.Method, Path: r.URL.Path, Key: c.key, ReceivedBytes: c.received, Attempt: c.attempt}
	case errMsg != "":
		return errorBody{Error: errMsg}
	}
	msg := fmt.Sprintf("status %d requested by the status knob", status)
	switch {
	case c.overCapacity:
		msg = fmt.Sprintf("over capacity: %d requests in flight", c.capacity)
	case injected:
		msg = "injected failure"
	}
	return failure{Error: msg, Status: status, Key: c.key, Attempt: c.attempt}
}

// writeBody writes v as JSON, or, when size >= 0, a body of exactly size
// bytes: the JSON with a "pad" field when it fits, else filler bytes. Exact
// sizes let benchmarks and body-truncation tests rely on the byte count.
func writeBody(w http.ResponseWriter, r *http.Request, status int, v any, size int64) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own plain structs are marshalled; this cannot happen.
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	if !bodyAllowed(r.Method, status) {
		w.WriteHeader(status)
		return
	}
	if size < 0 {
		b = append(b, '\n')
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(status)
		_, _ = w.Write(b) // the client may be gone; nothing to do about it
		return
	}

	const padOpen, padClose = `,"pad":"`, `"}`
	var prefix, suffix []byte
	fill := size
	if extra := int64(len(b) - 1 + len(padOpen) + len(padClose)); size >= extra {
		prefix = append(b[:len(b)-1:len(b)-1], padOpen...)
		suffix = []byte(padClose)
		fill = size - extra
		h.Set("Content-Type", "application/json")
	} else {
		h.Set("Content-Type", "text/plain; charset=utf-8")
	}
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(status)
	if _, err := w.Write(prefix); err != nil {
		return
	}
	chunk := make([]byte, min(fill, 32<<10))
	for i := range chunk {
		chunk[i] = 'x'
	}
	for fill > 0 {
		n := min(fill, int64(len(chunk)))
		if _, err := w.Write(chunk[:n]); err != nil {
			return
		}
		fill -= n
	}
	_, _ = w.Write(suffix)
}

func bodyAllowed(method string, status int) bool {
	return method != http.MethodHead && status != http.StatusNoContent && status != http.StatusNotModified
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
