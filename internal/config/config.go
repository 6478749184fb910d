package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Prefix is the environment prefix of every variable.
const Prefix = "JETPOST"

// Common is what worker and enqueue share: how to reach NATS and how the
// streams are laid out. Both commands create the streams idempotently, so
// both must agree on their shape.
type Common struct {
	NatsURL       string `split_words:"true" desc:"NATS server URL(s), comma-separated. Empty for worker: start an embedded server; for enqueue: nats://127.0.0.1:4222"`
	NatsUser      string `split_words:"true" desc:"NATS user name (with JETPOST_NATS_PASSWORD)"`
	NatsPassword  string `split_words:"true" desc:"NATS password"`
	NatsToken     string `split_words:"true" desc:"NATS authentication token"`
	NatsNkeyFile  string `split_words:"true" desc:"file holding an NKey seed to authenticate with"`
	NatsCredsFile string `split_words:"true" desc:"NATS credentials (.creds) file: JWT and NKey seed"`
	NatsTLSCa     string `split_words:"true" desc:"PEM file of CA certificates that sign the NATS server's certificate"`
	NatsTLSCert   string `split_words:"true" desc:"PEM client certificate for mutual TLS (with JETPOST_NATS_TLS_KEY)"`
	NatsTLSKey    string `split_words:"true" desc:"PEM private key of the client certificate"`

	SubjectPrefix string        `split_words:"true" default:"jetpost" desc:"first token of every subject and of the stream names, so tenants can share an account"`
	Replicas      int           `default:"1" desc:"replicas of every stream and bucket (1 to 5; 3 on a 3-node cluster): a worker or enqueue that starts raises a store with fewer to it (never lowers one), or warns with the command to run; enqueue status warns about any below it"`
	DedupWindow   time.Duration `split_words:"true" default:"30m" desc:"how long JetStream remembers job ids to drop re-enqueued duplicates"`
	ResultsMaxAge time.Duration `split_words:"true" default:"168h" desc:"how long results (and dead letters) are kept"`

	ReplyPrefixes string        `split_words:"true" desc:"NATS subject prefixes (comma-separated) a job's reply_to may name, e.g. replies,acme.out; > allows any subject. Empty: reply_to is refused. $ subjects, _INBOX and this deployment's own subjects are refused whatever it says"`
	MaxTimeout    time.Duration `split_words:"true" default:"5m" desc:"ceiling of a job's per-attempt timeout (at most 24h); a job asking for more is refused by enqueue and by workers"`

	RedactHeaders string `split_words:"true" desc:"more header names (comma-separated) whose values are secrets, redacted wherever jobs are shown as Authorization, Proxy-Authorization, Cookie and Set-Cookie always are, e.g. X-Api-Key. Job identity never hashes their values in the clear: enqueue and every worker must have the same list"`
	IdentityKey   string `split_words:"true" desc:"secret (at least 16 bytes, e.g. openssl rand -hex 32) shared by enqueue and every worker: when set, a job's credentials (secret headers, userinfo, secret parameters) are part of its identity through an HMAC keyed with it, so the same id and request with other credentials is another job. Set it when tenants share a deployment. Empty: credentials are left out and a rotated token is the same job"`

	LogLevel  string `split_words:"true" default:"info" desc:"debug, info, warn or error"`
	LogFormat string `split_words:"true" default:"auto" desc:"json, console, or auto (console on a terminal, json otherwise)"`
}

// Worker is the full configuration of the worker daemon.
type Worker struct {
	Common

	EmbeddedListen string `split_words:"true" default:"127.0.0.1:4222" desc:"listen address of the embedded NATS server (only without JETPOST_NATS_URL)"`
	DataDir        string `split_words:"true" default:"./data" desc:"JetStream store of the embedded NATS server"`
	WorkerID       string `split_words:"true" desc:"name of this worker in results and logs (default HOSTNAME-PID)"`
	HTTPAddr       string `split_words:"true" desc:"address for /healthz, /readyz, /metrics and the console at /, e.g. :9090; empty disables"`

	ConsoleToken         string `split_words:"true" desc:"secret (at least 16 bytes, e.g. openssl rand -hex 32) that enables the console's actions (pause, resume, cancel, re-drive), sent as Authorization: Bearer; empty: the console is read-only"`
	ConsoleNatsUser      string `split_words:"true" desc:"NATS user the console reads and acts as (with JETPOST_CONSOLE_NATS_PASSWORD), e.g. the console user of examples/nats-permissions.conf; empty: the worker's own connection, whose rights must then cover what the console reads and does"`
	ConsoleNatsPassword  string `split_words:"true" desc:"password of JETPOST_CONSOLE_NATS_USER"`
	ConsoleNatsCredsFile string `split_words:"true" desc:"NATS credentials (.creds) file the console reads and acts with, instead of JETPOST_CONSOLE_NATS_USER"`

	MaxInflight   int           `split_words:"true" default:"64" desc:"HTTP requests outstanding per worker process (the concurrency targets see)"`
	Prefetch      int           `default:"0" desc:"messages fetched ahead of a free slot; 0 means a quarter of JETPOST_MAX_INFLIGHT (at least 4)"`
	AckWait       time.Duration `split_words:"true" default:"30s" desc:"time a delivered job may go unacknowledged before JetStream redelivers it; running jobs send progress every third of it"`
	MaxAckPending int           `split_words:"true" default:"1000000" desc:"jobs delivered and not yet settled across all workers, including those waiting out a retry or breaker delay (consumer limit; -1 unlimited). Keep it above the jobs that may wait at once, or a down host's deferred jobs stall every host"`

	MaxAttempts      int           `split_words:"true" default:"5" desc:"tries per job: 1 attempt + 4 retries; a try turned away by an open breaker counts too"`
	BackoffBase      time.Duration `split_words:"true" default:"1s" desc:"first retry delay ceiling; doubles per attempt, full jitter"`
	BackoffMax       time.Duration `split_words:"true" default:"1m" desc:"ceiling of the retry delay"`
	MaxRetryAfter    time.Duration `split_words:"true" default:"5m" desc:"cap on a target's Retry-After"`
	RetryStatuses    string        `split_words:"true" default:"408,425,429,5xx" desc:"HTTP statuses that are retried; other 4xx and 5xx are permanent"`
	MaxJobAge        time.Duration `split_words:"true" default:"24h" desc:"a job still not done this long after enqueue fails with reason expired"`
	RequestTimeout   time.Duration `split_words:"true" default:"30s" desc:"per-attempt timeout (connect, headers and body) when the job sets none"`
	MaxResponseBytes int64         `split_words:"true" default:"65536" desc:"response body kept in the result; longer bodies are truncated"`
	MaxRedirects     int           `split_words:"true" default:"5" desc:"redirects followed per attempt"`

	MaxResponseHeaderBytes int64 `split_words:"true" default:"65536" desc:"response headers read per answer (4096 to 10485760); an answer with more fails as permanent"`

	IdempotencyHeader string `split_words:"true" default:"Idempotency-Key" desc:"header carrying the job id on every request (<id>:callback on its callback POST); empty disables"`
	AllowedNetworks   string `split_words:"true" desc:"CIDRs that may be reached despite the default refusal of loopback, private and link-local addresses, e.g. 127.0.0.0/8"`

	BreakerFailures         uint32        `split_words:"true" default:"10" desc:"failed answers (network error, timeout, 5xx) within JETPOST_BREAKER_WINDOW before a host's breaker may open; fewer never open it"`
	BreakerFailureRatio     float64       `split_words:"true" default:"0.5" desc:"share of a host's answers within JETPOST_BREAKER_WINDOW that must have failed for its breaker to open (0 < ratio <= 1): a few broken requests in a healthy stream do not open it, a host that is down opens it after JETPOST_BREAKER_FAILURES"`
	BreakerWindow           time.Duration `split_words:"true" default:"1m" desc:"rolling window of answers the breaker judges a host by"`
	BreakerOpenTimeout      time.Duration `split_words:"true" default:"30s" desc:"how long a host's breaker stays open before a probe (a waiting job's request); a job turned away spends a try of JETPOST_MAX_ATTEMPTS, not an attempt, and fails with reason breaker_open once its tries are spent"`
	BreakerHalfOpenRequests uint32        `split_words:"true" default:"1" desc:"probe requests allowed while a breaker is half-open"`

	HostMaxInflight     int    `split_words:"true" default:"0" desc:"requests in flight per host from one worker: the fixed limit, or the ceiling of the adaptive one; 0, or a value above JETPOST_MAX_INFLIGHT, means JETPOST_MAX_INFLIGHT"`
	AdaptiveConcurrency bool   `split_words:"true" default:"true" desc:"learn each host's concurrency limit between 1 and JETPOST_HOST_MAX_INFLIGHT: grow while answers succeed at a steady latency, shrink on 429, 503, timeouts and rising latency; false keeps it fixed at JETPOST_HOST_MAX_INFLIGHT"`
	RateLimits          string `split_words:"true" desc:"fleet-wide request rates per host, shared by every worker through NATS: HOST[:PORT]=N/s[:BURST] (or N/m, N/h, N/d; at least 1/d, a burst earned back within a day), comma-separated; *.DOMAIN matches subdomains, e.g. api.example.com=100/s:20,*.example.org=10/s"`

	ShutdownTimeout time.Duration `split_words:"true" default:"30s" desc:"on SIGTERM, how long requests in flight may finish before they are cancelled and handed back"`
}

// SecretHeaders is the configured list of extra secret header names.
func (c *Common) SecretHeaders() []string {
	var out []string
	for _, h := range strings.Split(c.RedactHeaders, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}

// LoadWorker reads the worker's configuration from the environment and
// validates it.
func LoadWorker() (*Worker, error) { return load[Worker]() }

// LoadCommon reads the shared part (for enqueue).
func LoadCommon() (*Common, error) { return load[Common]() }

// load reads a T from the environment and validates it.
func load[T any, P interface {
	*T
	Validate() error
}]() (*T, error) {
	var c T
	if err := process(&c, os.LookupEnv); err != nil {
		return nil, err
	}
	if err := P(&c).Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the shared settings.
func (c *Common) Validate() error {
	var errs []error
	if c.NatsURL != "" {
		for _, u := range strings.Split(c.NatsURL, ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err != nil || pu.Host == "" {
				errs = append(errs, fmt.Errorf("JETPOST_NATS_URL=%q: %q is not a URL like nats://host:4222", c.NatsURL, u))
			}
		}
	}
	if !validName(c.SubjectPrefix) {
		errs = append(errs, fmt.Errorf("JETPOST_SUBJECT_PREFIX=%q: use 1 to 32 characters of [A-Za-z0-9_-]", c.SubjectPrefix))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("JETPOST_REPLICAS=%d: must be 1 to 5", c.Replicas))
	}
	if c.DedupWindow <= 0 {
		errs = append(errs, fmt.Errorf("JETPOST_DEDUP_WINDOW=%s: must be positive", c.DedupWindow))
	}
	if c.ResultsMaxAge < time.Minute {
		errs = append(errs, fmt.Errorf("JETPOST_RESULTS_MAX_AGE=%s: must be at least 1m", c.ResultsMaxAge))
	}
	if c.NatsTLSCert != "" && c.NatsTLSKey == "" || c.NatsTLSCert == "" && c.NatsTLSKey != "" {
		errs = append(errs, errors.New("JETPOST_NATS_TLS_CERT and JETPOST_NATS_TLS_KEY go together"))
	}
	for name, path := range map[string]string{"JETPOST_NATS_NKEY_FILE": c.NatsNkeyFile, "JETPOST_NATS_CREDS_FILE": c.NatsCredsFile, "JETPOST_NATS_TLS_CA": c.NatsTLSCa, "JETPOST_NATS_TLS_CERT": c.NatsTLSCert, "JETPOST_NATS_TLS_KEY": c.NatsTLSKey} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", name, path, err))
		}
	}
	if _, err := c.Policy(); err != nil {
		errs = append(errs, err)
	}
	if c.IdentityKey != "" && len(c.IdentityKey) < 16 {
		errs = append(errs, fmt.Errorf("JETPOST_IDENTITY_KEY: %d bytes is too short to keep credentials from being guessed; use at least 16 (e.g. openssl rand -hex 32)", len(c.IdentityKey)))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("JETPOST_LOG_LEVEL=%q: use debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "json", "console", "auto":
	default:
		errs = append(errs, fmt.Errorf("JETPOST_LOG_FORMAT=%q: use json, console or auto", c.LogFormat))
	}
	return errors.Join(errs...)
}

// Validate checks every worker setting, so a bad value stops the process
// before it connects to anything.
func (c *Worker) Validate() error {
	errs := []error{c.Common.Validate()}
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	if c.NatsURL == "" {
		_, _, err := net.SplitHostPort(c.EmbeddedListen)
		check(err == nil, "JETPOST_EMBEDDED_LISTEN=%q: want host:port", c.EmbeddedListen)
		check(c.DataDir != "", "JETPOST_DATA_DIR: must not be empty")
	}
	if c.HTTPAddr != "" {
		_, _, err := net.SplitHostPort(c.HTTPAddr)
		check(err == nil, "JETPOST_HTTP_ADDR=%q: want host:port or :port", c.HTTPAddr)
	}
	errs = append(errs, c.validateConsole())
	check(c.MaxInflight >= 1 && c.MaxInflight <= 100000, "JETPOST_MAX_INFLIGHT=%d: must be 1 to 100000", c.MaxInflight)
	check(c.Prefetch >= 0 && c.Prefetch <= 100000, "JETPOST_PREFETCH=%d: must be 0 (automatic) to 100000", c.Prefetch)
	check(c.AckWait >= time.Second, "JETPOST_ACK_WAIT=%s: must be at least 1s", c.AckWait)
	check(c.MaxAckPending == -1 || c.MaxAckPending >= c.Window(), "JETPOST_MAX_ACK_PENDING=%d: must be -1 (unlimited) or at least the jobs one worker holds, JETPOST_MAX_INFLIGHT + min(JETPOST_MAX_INFLIGHT, 256) + JETPOST_PREFETCH (%d)", c.MaxAckPending, c.Window())
	check(c.MaxAttempts >= 1 && c.MaxAttempts <= 100, "JETPOST_MAX_ATTEMPTS=%d: must be 1 to 100", c.MaxAttempts)
	check(c.BackoffBase > 0, "JETPOST_BACKOFF_BASE=%s: must be positive", c.BackoffBase)
	check(c.BackoffMax >= c.BackoffBase, "JETPOST_BACKOFF_MAX=%s: must be at least JETPOST_BACKOFF_BASE (%s)", c.BackoffMax, c.BackoffBase)
	check(c.MaxRetryAfter >= 0, "JETPOST_MAX_RETRY_AFTER=%s: must not be negative", c.MaxRetryAfter)
	check(c.MaxJobAge > 0, "JETPOST_MAX_JOB_AGE=%s: must be positive", c.MaxJobAge)
	check(c.RequestTimeout > 0, "JETPOST_REQUEST_TIMEOUT=%s: must be positive", c.RequestTimeout)
	check(c.MaxResponseBytes >= 0, "JETPOST_MAX_RESPONSE_BYTES=%d: must not be negative", c.MaxResponseBytes)
	check(c.MaxRedirects >= 0 && c.MaxRedirects <= 50, "JETPOST_MAX_REDIRECTS=%d: must be 0 to 50", c.MaxRedirects)
	check(c.MaxResponseHeaderBytes >= 4<<10 && c.MaxResponseHeaderBytes <= 10<<20, "JETPOST_MAX_RESPONSE_HEADER_BYTES=%d: must be 4096 to 10485760", c.MaxResponseHeaderBytes)
	check(c.BreakerFailures >= 1, "JETPOST_BREAKER_FAILURES=%d: must be at least 1", c.BreakerFailures)
	check(c.BreakerFailureRatio > 0 && c.BreakerFailureRatio <= 1, "JETPOST_BREAKER_FAILURE_RATIO=%v: must be above 0 and at most 1", c.BreakerFailureRatio)
	check(c.BreakerWindow >= time.Second, "JETPOST_BREAKER_WINDOW=%s: must be at least 1s", c.BreakerWindow)
	check(c.BreakerOpenTimeout > 0, "JETPOST_BREAKER_OPEN_TIMEOUT=%s: must be positive", c.BreakerOpenTimeout)
	check(c.BreakerHalfOpenRequests >= 1, "JETPOST_BREAKER_HALF_OPEN_REQUESTS=%d: must be at least 1", c.BreakerHalfOpenRequests)
	check(c.ShutdownTimeout >= 0, "JETPOST_SHUTDOWN_TIMEOUT=%s: must not be negative", c.ShutdownTimeout)
	check(c.HostMaxInflight >= 0 && c.HostMaxInflight <= 100000, "JETPOST_HOST_MAX_INFLIGHT=%d: must be 0 (JETPOST_MAX_INFLIGHT) to 100000", c.HostMaxInflight)
	errs = append(errs, c.validateValues())
	return errors.Join(errs...)
}

// HostWaiting is how many jobs a worker may hold waiting for a host's
// capacity, on top of the JETPOST_MAX_INFLIGHT in flight: as many again,
// at most MaxHostWaiting. They hold no request place, so they cost other
// hosts nothing; the consumer runs a handler for each.
func (c *Worker) HostWaiting() int { return min(c.MaxInflight, MaxHostWaiting) }

// MaxHostWaiting: the waiting jobs only have to carry busy hosts through
// JetStream's pauses between redeliveries (a few hundred milliseconds);
// beyond that, each is a goroutine and a message in memory for nothing.
const MaxHostWaiting = 256

// Window is the most jobs one worker holds at once: in flight, waiting
// for a host, and fetched ahead.
func (c *Worker) Window() int { return c.MaxInflight + c.HostWaiting() + c.EffectivePrefetch() }

// EffectivePrefetch resolves the automatic prefetch window: big enough that
// refills are batched, small enough that fetched messages start well within
// their ack wait.
func (c *Worker) EffectivePrefetch() int {
	if c.Prefetch > 0 {
		return c.Prefetch
	}
	return max(4, c.MaxInflight/4)
}

func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Usage writes every variable of spec with its default and meaning, straight
// from the struct tags, so the help cannot drift from the code.
func Usage(w io.Writer, spec any) error {
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	const tmpl = "VARIABLE\tDEFAULT\tMEANING\n{{range .}}{{usage_key .}}\t{{usage_default .}}\t{{usage_description .}}\n{{end}}"
	if err := envconfig.Usagef(Prefix, spec, tw, tmpl); err != nil {
		return err
	}
	return tw.Flush()
}
