package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Job is one HTTP request to deliver. It is what enqueue publishes and what a
// worker decodes; the JSON field names are the wire format and, for the
// fields a user writes, the input format too.
type Job struct {
	ID      string            `json:"id"`
	Batch   string            `json:"batch"`
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	// Data, JSON and Params are aiohttp's data=, json= and params=, each
	// kept as the bytes the input gave (Encode puts them on the wire
	// unchanged). Data is a string, sent as its text, or an object, sent
	// form-encoded; JSON is any value, sent byte for byte as written (white
	// space and escapes included); at most one of the two is set. Params is
	// an object whose names and values are appended to URL's query
	// (RequestURL). Body and RequestURL say what is sent.
	Data     json.RawMessage `json:"data,omitempty"`
	JSON     json.RawMessage `json:"json,omitempty"`
	Params   json.RawMessage `json:"params,omitempty"`
	Callback string          `json:"callback,omitempty"`
	ReplyTo  string          `json:"reply_to,omitempty"`
	Timeout  Duration        `json:"timeout,omitempty"`
	// EnqueuedAt lets a worker expire jobs that waited too long, whatever
	// their redelivery history.
	EnqueuedAt time.Time `json:"enqueued_at"`
	// Redrive counts how often the job was re-driven from the dead-letter
	// stream; a re-driven job is a new run with a result of its own.
	Redrive int `json:"redrive,omitempty"`
	// Rate is the per-batch limit from enqueue --rate: requests per second
	// to each host, across every worker (0: none). Set by enqueue, not by
	// the file.
	Rate float64 `json:"rate,omitempty"`
	// Source is where enqueue read the job, "FILE:LINE" ("-:LINE" for
	// standard input), so results can be joined to id-less input. It is
	// display text only: nothing is decided by it.
	Source string `json:"source,omitempty"`
	// Kind is empty for a request to send, KindCallback for a re-driven
	// callback: a message that POSTs Result to Callback and sends nothing
	// to URL.
	Kind string `json:"kind,omitempty"`
	// Result is the stored result a callback message sends again.
	Result *Result `json:"result,omitempty"`
}

// KindCallback marks a message that re-sends a job's result to its
// callback, and nothing else.
const KindCallback = "callback"

// CallbackMessage returns the message that sends r to j's callback again:
// the job's identity and callback, no headers or body (not needed, and they
// may hold secrets), and the job's run number, which the callback's key
// depends on. With r nil it is what a dead letter keeps, r being beside it.
func (j *Job) CallbackMessage(r *Result) *Job {
	return &Job{
		ID: j.ID, Batch: j.Batch, Callback: j.Callback,
		EnqueuedAt: j.EnqueuedAt, Redrive: j.Redrive, Source: j.Source, Kind: KindCallback, Result: r,
	}
}

// CallbackKey is the idempotency key of the POST of j's result to its
// callback. It differs from the job's own key (its id), so an API that
// enforces keys does not take the callback for a replay of the job; it is
// the same for every try and every re-drive of that callback, and new for
// each run of the job, whose re-drive has a new result to report.
func (j *Job) CallbackKey() string {
	if j.Redrive > 0 {
		return j.ID + ":callback:r" + strconv.Itoa(j.Redrive)
	}
	return j.ID + ":callback"
}

// MaxSourceLen bounds Source, which every job and result carries.
const MaxSourceLen = 512

// SourceOf is the Source of the entry that starts at line of file ("-"
// for standard input): control characters and invalid UTF-8 in the name
// become "?", and a name too long loses its start, where a path says least.
func SourceOf(file string, line int) string {
	suffix := ":" + strconv.Itoa(line)
	name := strings.Map(func(r rune) rune {
		if r == utf8.RuneError || isCTL(r) {
			return '?'
		}
		return r
	}, file)
	if room := MaxSourceLen - len(suffix); len(name) > room {
		const ellipsis = "…"
		name = name[len(name)-(room-len(ellipsis)):]
		for name != "" && !utf8.RuneStart(name[0]) {
			name = name[1:]
		}
		name = ellipsis + name
	}
	return name + suffix
}

// Host returns the host the job talks to, as HostKey spells it.
func (j *Job) Host() string {
	u, err := url.Parse(j.URL)
	if err != nil {
		return ""
	}
	return HostKey(u)
}

// HostKey is the one spelling of u's host for per-host breakers, limits,
// metrics and logs: lower-case host and port, the scheme's default port
// filled in, so https://API.example.com and https://api.example.com:443 are
// one host.
func HostKey(u *url.URL) string {
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		port = "80"
		if strings.EqualFold(u.Scheme, "https") {
			port = "443"
		}
	}
	return net.JoinHostPort(host, port)
}

// Limits on what a job may contain. They keep one hostile line from costing a
// worker more than a bounded amount of memory or a header table.
const (
	MaxIDLen     = 256
	MaxURLLen    = 8 << 10
	MaxHostLen   = 253 // the longest DNS name
	MaxHeaders   = 100
	MaxHeaderLen = 16 << 10 // name + value of one header
	MaxBatchLen  = 64
	MaxRate      = 1000000 // requests per second of a per-batch rate
	// MinRate is the slowest per-batch rate, one request a day: the
	// limiters keep no state longer (hostlimit.MinRate).
	MinRate = 1.0 / (24 * 60 * 60)
)

// Validate reports the first reason the job cannot be sent. It is used for
// input lines and again by workers for what they pull off the wire, so a
// message that did not come from enqueue is held to the same rules.
func (j *Job) Validate() error {
	if j.ID == "" {
		return errors.New("id is empty")
	}
	if len(j.ID) > MaxIDLen {
		return fmt.Errorf("id is %d bytes, limit %d", len(j.ID), MaxIDLen)
	}
	// The id travels in a NATS header (the de-duplication key), in logs and
	// on terminals: a line break would forge a header, an escape sequence
	// would rewrite a screen.
	if !utf8.ValidString(j.ID) || strings.IndexFunc(j.ID, isCTL) >= 0 {
		return fmt.Errorf("id %s has a control character or invalid UTF-8", quote(j.ID))
	}
	// NATS trims header values, so " a" and "a" would de-duplicate as one
	// job: refuse the ambiguity rather than lose a job to it.
	if strings.TrimSpace(j.ID) != j.ID {
		return fmt.Errorf("id %s has leading or trailing white space", quote(j.ID))
	}
	if err := j.validateRequest(); err != nil {
		return err
	}
	if len(j.Headers) > MaxHeaders {
		return fmt.Errorf("%d headers, limit %d", len(j.Headers), MaxHeaders)
	}
	for k, v := range j.Headers {
		if headerError(k, v) != nil {
			// Report the first bad header in name order, not map order, so
			// that the same file gives the same message every run.
			for _, k := range slices.Sorted(maps.Keys(j.Headers)) {
				if err := headerError(k, j.Headers[k]); err != nil {
					return err
				}
			}
		}
	}
	if j.Callback != "" {
		if err := validateURL("callback", j.Callback); err != nil {
			return err
		}
	}
	if j.ReplyTo != "" && !ValidSubject(j.ReplyTo) {
		return fmt.Errorf("reply_to %s is not a valid NATS subject (no spaces, no wildcards, no empty tokens)", quote(j.ReplyTo))
	}
	if j.Timeout < 0 {
		return errors.New("timeout is negative")
	}
	if !(j.Rate == 0 || j.Rate >= MinRate && j.Rate <= MaxRate) { // also refuses NaN
		return fmt.Errorf("rate %v is out of range: 0 (none) or 1/d (%.3g) to %d requests per second", j.Rate, MinRate, MaxRate)
	}
	if err := j.validateBody(); err != nil {
		return err
	}
	// Source is shown on terminals: held to the rules of ids.
	if len(j.Source) > MaxSourceLen || !utf8.ValidString(j.Source) || strings.IndexFunc(j.Source, isCTL) >= 0 {
		return fmt.Errorf("source %s is over %d bytes, or has a control character or invalid UTF-8", quote(j.Source), MaxSourceLen)
	}
	return j.validateKind()
}

// validateRequest checks the method and URL of a request. A callback
// message has neither: a worker that does not know the kind (an older one,
// in a rolling upgrade) then refuses it as invalid instead of sending a
// request to the job's URL.
func (j *Job) validateRequest() error {
	if j.Kind == KindCallback {
		if j.Method != "" || j.URL != "" {
			return errors.New("a callback message has no method or url of its own")
		}
		return nil
	}
	if !ValidToken(j.Method) {
		return fmt.Errorf("method %s is not a valid HTTP method", quote(j.Method))
	}
	return validateURL("url", j.URL)
}

// validateKind checks that a message is a request, or a callback message
// with what it sends and where.
func (j *Job) validateKind() error {
	switch j.Kind {
	case "":
		if j.Result != nil {
			return errors.New("result is set on a job that is not a callback message")
		}
	case KindCallback:
		if j.Callback == "" || j.Result == nil {
			return errors.New("a callback message needs a callback URL and the result to send")
		}
	default:
		return fmt.Errorf("kind %s is not %q or empty", quote(j.Kind), KindCallback)
	}
	return nil
}

func headerError(k, v string) error {
	if !ValidToken(k) {
		return fmt.Errorf("header name %s is not valid", quote(k))
	}
	if !ValidHeaderValue(v) {
		return fmt.Errorf("header %s has a control character in its value", quote(k))
	}
	if len(k)+len(v) > MaxHeaderLen {
		return fmt.Errorf("header %s is %d bytes, limit %d", quote(k), len(k)+len(v), MaxHeaderLen)
	}
	return nil
}

func validateURL(field, raw string) error {
	if raw == "" {
		return fmt.Errorf("%s is missing", field)
	}
	if len(raw) > MaxURLLen {
		return fmt.Errorf("%s is %d bytes, limit %d", field, len(raw), MaxURLLen)
	}
	if hint := schemeHint(raw); hint != "" {
		return fmt.Errorf("%s %s has no scheme: write %s", field, quote(RedactURL(raw)), hint)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s %s is not a URL: %w", field, quote(RedactURL(raw)), errors.Unwrap(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%s %s must be an absolute http or https URL", field, quote(RedactURL(raw)))
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%s %s has no host", field, quote(RedactURL(raw)))
	}
	if n := len(u.Hostname()); n > MaxHostLen {
		// No DNS name is longer; hosts also name breakers and limits,
		// whose reports must stay small.
		return fmt.Errorf("%s host is %d bytes, limit %d", field, n, MaxHostLen)
	}
	return nil
}

// schemeHint suggests the absolute URLs meant by raw when it names a host
// without a scheme ("api.example.com/x", "localhost:8080", "//host/x"),
// or "" when it does not look like one.
func schemeHint(raw string) string {
	if strings.Contains(raw, "://") {
		return ""
	}
	rest := strings.TrimPrefix(raw, "//")
	host, _, _ := strings.Cut(rest, "/")
	host, _, _ = strings.Cut(host, "?")
	if h, port, ok := strings.Cut(host, ":"); ok {
		if _, err := strconv.Atoi(port); err != nil {
			return ""
		}
		host = h
	}
	if host == "" || !(strings.Contains(host, ".") || host == "localhost") {
		return ""
	}
	u := RedactURL("https://" + rest)
	return fmt.Sprintf("%q (or %q)", u, "http://"+strings.TrimPrefix(u, "https://"))
}

// quote quotes a user-supplied string for a message, shortened so that one
// absurd key cannot make a megabyte of error text.
func quote(s string) string {
	short := shorten(s)
	if len(short) < len(s) {
		return fmt.Sprintf("%q…", short)
	}
	return fmt.Sprintf("%q", s)
}

// shorten cuts s to at most 64 bytes, on a character boundary.
func shorten(s string) string { return Cut(s, 64) }

// Cut cuts s to at most n bytes, on a character boundary.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n = max(n, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// isCTL reports the ASCII control characters of RFC 5234 (CTL).
func isCTL(r rune) bool { return r < 0x20 || r == 0x7f }

// ValidHeaderValue reports whether s has none of the control characters
// (tab aside) that net/http refuses at send time: refusing them early keeps
// such a job from burning every retry on a certain failure.
func ValidHeaderValue(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r != '\t' && isCTL(r) }) < 0
}

// ValidToken reports whether s is an RFC 9110 token (methods, header names).
func ValidToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// ValidSubject reports whether s can be published to: non-empty tokens
// separated by dots, no wildcards, no white space.
func ValidSubject(s string) bool {
	if s == "" || len(s) > 1024 {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		if strings.ContainsAny(tok, " \t\r\n\x00") {
			return false
		}
	}
	return true
}

// ValidBatch reports whether id can name a batch: [A-Za-z0-9_-], 1 to 64
// characters, so it is safe as a subject token and a file name.
func ValidBatch(id string) bool {
	if id == "" || len(id) > MaxBatchLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Encode is the wire encoding of a job. Data, JSON and Params go out as the
// bytes the job holds, not re-encoded: what the file said is what the
// worker sends.
func Encode(j *Job) ([]byte, error) {
	rest := *j
	rest.Data, rest.JSON, rest.Params = nil, nil, nil
	b, err := json.Marshal(&rest)
	if err != nil {
		return nil, err
	}
	for _, f := range [...]struct {
		name string
		raw  json.RawMessage
	}{{fieldData, j.Data}, {fieldJSON, j.JSON}, {fieldParams, j.Params}} {
		if len(f.raw) == 0 {
			continue
		}
		if !json.Valid(f.raw) {
			return nil, fmt.Errorf("encoding job %s: %s is not valid JSON", quote(j.ID), f.name)
		}
		b = WithRawField(b, f.name, f.raw)
	}
	return b, nil
}

// Decode parses and validates a job from the wire. Anything that fails here is
// a poison message: retrying it cannot help.
func Decode(b []byte) (*Job, error) {
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("decoding job: %w", err)
	}
	if !ValidBatch(j.Batch) {
		return &j, fmt.Errorf("invalid job %s: batch %s is not a valid batch id", quote(j.ID), quote(j.Batch))
	}
	if err := j.Validate(); err != nil {
		return &j, fmt.Errorf("invalid job %s: %w", quote(j.ID), err)
	}
	return &j, nil
}

// Duration is a time.Duration that reads "30s"-style strings or a number of
// seconds (what the aiohttp-era files used) and writes a string.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	// encoding/json's convention: null leaves the value alone.
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		return d.setString(s)
	}
	return d.setSeconds(string(b))
}

// setString reads the "30s" form.
func (d *Duration) setString(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("timeout %s is not a duration like \"30s\"", quote(s))
	}
	// The same bound as the numeric form: the deployment's ceiling
	// (Policy) is checked after, against a value that makes sense.
	if v > MaxTimeout {
		return fmt.Errorf("timeout %s is out of range (at most %s)", quote(s), MaxTimeout)
	}
	*d = Duration(v)
	return nil
}

// setSeconds reads a JSON number of seconds.
func (d *Duration) setSeconds(num string) error {
	secs, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return fmt.Errorf("timeout %s is neither a duration string nor a number of seconds", quote(num))
	}
	if secs < 0 || secs > MaxTimeout.Seconds() {
		if short := shorten(num); len(short) < len(num) {
			num = short + "…"
		}
		return fmt.Errorf("timeout %s seconds is out of range", num)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// Result is the one final record of a job, published to the batch's result
// subject and written by enqueue --out.
type Result struct {
	ID    string `json:"id"`
	Batch string `json:"batch"`
	// Method, URL (secrets redacted: RedactURL) and Source (Job.Source)
	// join the result to the request and the input entry it came from.
	Method string `json:"method,omitempty"`
	URL    string `json:"url,omitempty"`
	Source string `json:"source,omitempty"`
	OK     bool   `json:"ok"`
	// Status is the HTTP status of the last attempt, 0 if none was answered.
	Status int `json:"status"`
	// Attempts counts HTTP requests started for the job; deferrals by a
	// breaker and hand-backs at shutdown do not count.
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
	// Reason classifies a failure for scripts and summaries; empty on
	// success.
	Reason        Reason          `json:"reason,omitempty"`
	Body          string          `json:"body"`
	BodyTruncated bool            `json:"body_truncated"`
	DurationMS    int64           `json:"duration_ms"`
	Worker        string          `json:"worker"`
	FinishedAt    time.Time       `json:"finished_at"`
	Callback      *CallbackResult `json:"callback,omitempty"`
}

// CallbackResult records what happened to the POST of the result to the
// job's callback URL. The result is stored whatever it says.
type CallbackResult struct {
	OK       bool   `json:"ok"`
	Status   int    `json:"status"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error,omitempty"`
}

// Reason is why a job finally failed, or why its dead letter was written.
// The values are wire names (results, dead letters, metric labels): they
// never change.
type Reason string

// Reasons a job finally failed.
const (
	ReasonPermanent Reason = "permanent" // the target answered with a non-retryable status
	ReasonExhausted Reason = "exhausted" // every attempt ended in a retryable failure
	ReasonExpired   Reason = "expired"   // the job outlived the maximum job age
	ReasonRefused   Reason = "refused"   // the guard refused the target's address
	ReasonInvalid   Reason = "invalid"   // the message is not a valid job
	// ReasonBreakerOpen: the tries ran out with at least one turned away
	// by the host's open circuit breaker (no request sent for it).
	ReasonBreakerOpen Reason = "breaker_open"
)

// ReasonCallbackFailed is the reason of the dead letter of a job that
// succeeded but whose callback finally failed. It is never a result's
// reason: the job's result stands as it was.
const ReasonCallbackFailed Reason = "callback_failed"

// ReasonCancelled is reserved for a job cancelled before any request was
// sent (batch control, to come); a plain re-run sends such a job again, as
// nothing reached its target.
const ReasonCancelled Reason = "cancelled"

func (r Reason) String() string { return string(r) }

// EncodeResult is the wire encoding of a result.
func EncodeResult(r *Result) ([]byte, error) { return json.Marshal(r) }

// EncodeResultWithin encodes r in at most limit bytes, cutting the response
// body (and marking it truncated) when the whole record would be longer: a
// broker refuses messages over its maximum payload, and a result that cannot
// be stored would leave its job unsettled for ever. It keeps the longest
// start of the body that fits; r is not changed. It fails only if the record
// is too long without any body.
func EncodeResultWithin(r *Result, limit int) ([]byte, error) {
	data, err := EncodeResult(r)
	if err != nil || len(data) <= limit {
		return data, err
	}
	cut := *r
	cut.BodyTruncated = true
	encode := func(n int) ([]byte, error) {
		cut.Body = Cut(r.Body, n)
		return EncodeResult(&cut)
	}
	// A byte of body takes from one to six bytes encoded ("\u003c"), so the
	// longest start that fits is searched for, not computed.
	var best []byte
	// hi: the longest start that may fit. No start longer than the limit
	// does, which bounds each try's work by the limit, not the body.
	lo, hi := 0, min(len(r.Body)-1, limit)
	for lo <= hi {
		mid := lo + (hi-lo)/2
		b, err := encode(mid)
		if err != nil {
			return nil, err
		}
		if len(b) <= limit {
			best, lo = b, mid+1
		} else {
			hi = mid - 1
		}
	}
	if best == nil {
		return nil, fmt.Errorf("result of job %q is over the limit of %d bytes even without its body", r.ID, limit)
	}
	return best, nil
}

// DecodeResult parses a result record.
func DecodeResult(b []byte) (*Result, error) {
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decoding result: %w", err)
	}
	return &r, nil
}
