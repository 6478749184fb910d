// Package hostlimit decides whether a request to a host may start now. Its
// Limiter is the sender.Admission of a worker (Admit returns a
// sender.Permit that takes the request's feedback): per-host concurrency
// limits, adaptive by default, and per-host rate limits whose state can be shared
// by a whole fleet of worker processes. It knows nothing of NATS: the shared
// state is behind the small Buckets interface (internal/fleetrate keeps it
// in a JetStream key-value bucket).
//
// # Refusals cost nothing
//
// A request that may not start now is refused with the time to come back
// (sender.NotAdmittedError), the sender answers Defer, and the worker hands
// the job back to JetStream with that delay: the job holds no slot, spends
// no attempt, and jobs for other hosts flow past it. The delays are
// scheduled, not random: refused jobs of a host are spaced at about the
// pace at which the host frees capacity (Little's law: limit ÷ latency for
// concurrency; for a rate limit, a schedule shared by the whole fleet
// through Buckets, or this process's share of the rate while the shared
// state cannot be reached), a
// little faster so that a free slot rarely waits for a job, so a backlog of
// thousands of jobs for one host is parked about once each rather than
// spinning through the worker. A line is paced on the host's best lately
// (its baseline latency; the highest of its limit now, where it last pushed
// back and the highest limit lately): a stall shorter than a second is as
// often this process starved of CPU as the host slowing down, and a line
// stretched by it, or by a limit that such a stall cut down, would hold
// the jobs parked on it back long after. When several workers share a host
// (Config.Peers above 1), a parked job comes back to whichever worker
// pulls it; the workers pull alike, so each line must drain at the fleet's
// pace divided among them: each worker posts its limit for the host in
// Buckets (on a refusal, at most once a second) and paces its own line on
// the higher of its limit and the workers' average. Lines paced on each
// worker's own limit drained at different speeds, the slowest last, at a
// fraction of the host's capacity.
//
// The one exception is a bounded buffer (Config.MaxWaiting: in cmd/worker
// the handlers it runs beyond JETPOST_MAX_INFLIGHT, as many again up to
// 256). A request whose slot is due
// within a few of the host's latencies, or whose token is due within a
// lease period, may wait for it in Admit, at most MaxWait. JetStream hands
// parked jobs back in bursts: every delayed NAK pushes the consumer's
// redelivery timer 10 ms out, and with more than 1024 jobs pending the
// server postpones redeliveries by 100 ms whenever acknowledgements are
// streaming in. The buffer carries a busy host through those pauses, so
// that its slots are refilled the moment they free and its tokens are
// spent as they accrue instead of lapsing (BENCHMARKS.md measures what it
// buys). A host holds at most six waiting requests per slot, each for up
// to eight of its latencies, or, when it is fast, as many as it serves in
// 100 ms, each for up to MaxWait, in a buffer Config.FastWaiting larger
// (a parked job costs a delayed NAK and a redelivery, more than a
// millisecond's request); half its limit, for a moment each, until about
// 20 good answers have told its latency; and a host that stops answering
// none. Waiting costs other hosts nothing, but a fast host's extra
// waiters for about 100 ms while it keeps its pace, up to MaxWait if it
// stalls (a stalled host takes no new waiters): the worker runs a handler for each job of
// the buffer on top of its JETPOST_MAX_INFLIGHT, and the sender bounds
// the requests in flight (sender.Config.MaxRequests) after admission, so
// a waiting job holds no request place.
//
// # Idle gaps cost nothing
//
// No state slows a batch for having arrived after an idle gap: a host
// counts as stalled only while it owes an answer (since its last answer or
// since it went from idle to busy, whichever is later), and no line of
// refused jobs reaches further ahead than MaxDefer. A host idle for
// IdleAfter is forgotten and starts afresh.
//
// # A 429 is paced, not backed off, and teaches the limit alike
//
// A 429 cuts the host's adaptive limit the same way whether it carries
// Retry-After (in seconds or as an HTTP date) or not: the limit learns from
// the refusal, the retry waits what the host asked for. The refused
// request's slot stays taken for one of the host's latencies, and a 429
// within the round trip after a cut holds the limit to what is still in
// flight: a host that refuses at once would otherwise be sent a request
// per freed slot per millisecond.
//
// A job whose host answers 429 without Retry-After spends its attempt, as
// any retry does, but its retry is booked in the host's line of refused
// jobs (the sender.Permit's Done answers its delay) rather than left to a
// blind exponential backoff, when that 429 is the adaptive limit probing the
// host's edge: the limit was just cut for it, and the line is spaced at
// the host's best pace lately. A job refused near the end of a batch thus
// comes back when the host has room, not up to a backoff after every other
// job is done. The worker's backoff still applies to a fixed limit (it
// does not learn from the refusal), to a host whose pace is not known yet,
// and to a host answering 429 more than three times in a row: that one is
// out of quota rather than of concurrency, and pacing would spend a job's
// attempts within a second.
//
// # Adaptive concurrency
//
// Each host's limit starts at Config.InitialLimit and moves between 1 and
// Config.MaxInflight, learned from the host's answers (see adaptive): slow
// start, then additive increase while answers succeed at a steady latency;
// multiplicative decrease (×0.9) on 429, 503, timeouts, and on latency
// rising above twice the host's recent baseline (and by more than 10 ms, so
// that the jitter of a sub-millisecond host is not read as load), at most
// once per round
// trip. It is the loss-based AIMD of TCP Reno and Netflix's AIMDLimit, with
// the delay signal of TCP Vegas and Netflix's gradient limiters as an
// early brake. The limit is per worker process; several workers against
// one host each find their share, as TCP flows on one link do. Near where
// the host last pushed back, the limit grows at a quarter of the usual
// pace, times a gain that halves while the host pushes back again within
// 20 of its latencies and doubles back after as long without: each worker
// adds its growth to the host's load, so three workers pushed it over three
// times as often (5% of requests refused, against 0.5% for one).
//
// # Fleet-wide rate limits
//
// A rate limit is a GCRA (generic cell rate algorithm) over one number per
// limit, the bucket's theoretical arrival time, updated with
// compare-and-swap in Buckets. A process leases up to a tenth of a second's
// worth of tokens (at least one; within the burst) per round trip and spends them
// locally; leased tokens lapse shortly after their time, so a lease cannot
// turn into a later burst. The combined rate of every process sharing the
// state is thus bounded by the rate (plus the burst), whatever their
// number, and a process that dies leaves nothing to clean up.
//
// The state must outlive the time the burst takes to earn back, or a slow
// limit would start again with a full burst: MaxSpan (a day) bounds that
// time, so rates are at least MinRate (1/d) and bursts at most a day's
// worth. ParseRate refuses anything beyond; a Rate that arrives otherwise
// (a batch rate) saturates there rather than overflowing into no limit.
//
// When the shared state cannot be reached, requests to rate-limited hosts
// are refused (deferred for about a second, again and again) until it can:
// a limit that an API publishes is never exceeded because the coordination
// failed. Hosts without a rate limit are not affected.
package hostlimit
