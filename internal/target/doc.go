// Package target is a stand-in for the third-party HTTP APIs jetpost
// delivers to: a configurable http.Handler that answers like a slow, flaky or
// picky server and counts exactly what it saw.
//
// It exists so that three things need no outside service:
//
//   - the demo (cmd/demotarget, `make demo`): one local process serves every
//     job of examples/requests.jsonl, each URL choosing its own behaviour;
//   - integration tests, which assert on what the target observed: how many
//     requests were in flight at once (the worker's MAX_INFLIGHT bound), the
//     exact answer sequence a job got (503, 503, 200), and how many times a
//     job already delivered was sent again (at-least-once should make that
//     rare, never the norm);
//   - benchmarks, which need a target with known latency and failure rate
//     and a reproducible random sequence.
//
// It is standard library only, so tests anywhere in the module can import it
// without new dependencies.
//
// # Host-wide options
//
// Options apply to every request unless a query knob overrides them for one
// request. SetOptions changes them at run time (a test can turn a failing
// host healthy to watch a breaker close); Reset starts the counters over.
//
//   - Latency, Jitter: each request waits Latency plus a uniform draw in
//     [0, Jitter] before it is answered. The wait ends early if the client
//     gives up, so an abandoned request never holds a counted slot.
//   - FailRate, FailStatus: a request fails with FailStatus (default 503)
//     with probability FailRate.
//   - Seed: seeds the random draws (one source for failures, one for
//     jitter), so a sequential run is reproducible. Reset restarts them.
//   - KeyHeader: the header carrying the job's identity (default
//     Idempotency-Key), matching the sender's idempotency header.
//   - OnRequest: a test hook run on each counted request right after it is
//     counted in flight; blocking in it holds the request, so a test can
//     observe in-flight counts without sleeping.
//
// # Per-request knobs (query string)
//
// The path is free-form (/orders/17); these query parameters choose the
// behaviour, and any other parameter is ignored. A malformed knob is
// answered 400 with the reason, so a typo in a demo file shows at once.
//
//   - latency=50ms, jitter=20ms: override Latency and Jitter (at most 10m).
//   - status=404: always answer 404 (any status in 200-599), whatever the
//     failure knobs or the host-wide FailRate say.
//   - fail_first=2: answer the failure status to the first 2 requests of
//     this Idempotency-Key (without one: of this method and URL), then 2xx.
//     This is the deterministic "503, 503, 200" of retry tests.
//   - fail_rate=0.3: override FailRate.
//   - fail_status=429: override FailStatus (400-599).
//   - retry_after=1: add "Retry-After: 1" to answers with a status >= 400
//     (seconds, or an HTTP-date passed through as given).
//   - size=1000: make the response body exactly 1000 bytes: the usual JSON
//     with a "pad" field when it fits, filler bytes otherwise (at most
//     64 MiB).
//
// A 2xx answer is a small JSON echo:
//
//	{"method":"POST","path":"/orders/17","key":"job-1","received_bytes":42,"attempt":1}
//
// where attempt is the request's number for its key (0 when untracked).
// Other answers carry {"error":..., "status":...}.
//
// # Counting
//
// Stats (also GET /stats, not itself counted; GET /stats?keys=1 adds the
// per-key state) reports requests, in-flight now and at most, answers by
// status, cancellations, bytes received and duplicates. POST /reset starts
// over. A request is in flight from its arrival until its answer starts to
// leave, so a client that keeps at most N requests outstanding is never
// measured above N, and reaching N is measured exactly. A duplicate is a
// request whose key had already been answered 2xx when it finished. Key and
// Keys report per key: requests, answers in order (0 for a client that gave
// up), successes and duplicates.
//
// Counters on the path of a request are atomics; only keyed requests (and
// fail_first without a key) take a mutex, for the per-key map.
package target
