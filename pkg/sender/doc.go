// Package sender makes one HTTP attempt for a job and says what it means:
// a Class: Succeeded, Retryable (and when), Permanent, or Postponed (nothing
// was sent). It owns the HTTP client, the per-host circuit breakers and the
// address guard; it knows nothing of NATS, and retry budgets and delays are
// applied by the caller from the returned Outcome.
//
// # Classification
//
// One function (classify) decides, so the worker, the result records and the
// breakers agree on what an answer means:
//
//	answer                                  Class      Attempted  breaker
//	2xx, 1xx, 3xx not followed              Succeeded  yes        success
//	408, 425, 429 (in RetryStatuses)        Retryable  yes        success
//	5xx (in RetryStatuses)                  Retryable  yes        failure
//	other 4xx                               Permanent  yes        success
//	5xx left out of RetryStatuses           Permanent  yes        failure
//	network error, timeout, reset, refused  Retryable  yes        failure
//	  connection, broken body
//	too many redirects                      Permanent  yes        success
//	redirect to a scheme other than http    Permanent  yes        success
//	  or https, or to no host
//	response headers over                   Permanent  yes        success
//	  MaxResponseHeaderBytes (64 KiB)
//	address refused by the guard            Permanent  no (1)     ignored
//	request cannot be built                 Permanent  no         untouched
//	caller's context done while sending     Retryable  yes        ignored
//	caller's context done before sending    Postponed  no         untouched
//	breaker open (or half-open and busy)    Postponed  no         untouched
//	host limit reached (Admission)          Postponed  no         untouched
//	rate token stale: waited > 50 ms for    Postponed  no         untouched
//	  one of MaxRequests places
//
// (1) yes when the refused address was a redirect target: the first host did
// receive a request.
//
// Retryable outcomes carry the target's Retry-After (seconds or HTTP-date,
// capped by Config.MaxRetryAfter) when it sent one; for a 429 without one,
// the host's pace, answered by the admission's Permit.Done; otherwise the
// caller uses Backoff. Bodies are kept, up to Config.MaxResponseBytes, on failures too:
// an API's error message is what a user needs to fix a permanent failure.
//
// # Breakers
//
// Each host (lower-case host:port of the job's URL, the scheme's default port
// filled in, as for host limits) has its own breaker, so
// one host going down defers only its own jobs. It opens on a failure rate,
// not a streak: at least Breaker.Failures failed answers within a rolling
// Breaker.Window, making up at least Breaker.FailureRatio of the answers
// in it, so one broken endpoint on a healthy host leaves it closed. A
// breaker counts only what
// suggests the host is down or broken: network errors, timeouts and 5xx. A
// 4xx proves the host is up and answering. 408, 425 and 429 are retried but
// mean "slow down", which backoff and Retry-After already do; opening the
// breaker on them would turn a rate limit into a full stop. A refused address
// and a cancelled caller say nothing about the host: counting shutdowns would
// make a restarted worker start with its busiest hosts deferred. A deferred
// job costs no HTTP request and no attempt; its Err is a *BreakerOpenError
// and its RetryAfter is when the breaker lets a probe through, the most it
// should wait (a caller with a shorter retry schedule comes back sooner).
// An open breaker is asked before the host limits (Admission) and the
// request places: a job it will turn away neither waits for, nor holds,
// room that jobs of healthy hosts could use. A half-open one is asked
// after them, since the request it lets through is sent.
// The probe is the next job's own request: its outcome is that job's.
//
// # Address guard
//
// Job URLs come from files nobody vetted, so by default the sender will not
// connect to any address the IANA special-purpose registries mark as not
// globally reachable: loopback, private (RFC 1918, fc00::/7), link-local
// (including the cloud metadata service at 169.254.169.254), CGNAT
// (100.64.0.0/10), multicast, unspecified, broadcast, 0.0.0.0/8,
// 192.0.0.0/24, the TEST-NETs and 2001:db8::/32, benchmarking
// (198.18.0.0/15, 2001:2::/48), 240.0.0.0/4, 2001::/23 (Teredo included),
// and every IPv6 address outside global unicast 2000::/3 (IPv4-compatible
// ::/96, site-local fec0::/10, local-use NAT64 64:ff9b:1::/48, ...).
// Addresses that wrap an IPv4 address are judged by it: IPv4-mapped,
// NAT64 (64:ff9b::/96) and 6to4 (2002::/16). The check runs in the dialer's Control hook, on the resolved
// address the socket is about to connect to, for every connection including
// redirect targets: checking the URL's host name up front would be defeated
// by DNS rebinding or a redirect. There is no proxy support for the same
// reason: the guard would vet the proxy, not the target. Networks that must
// be reachable anyway are listed in Config.AllowedNetworks (see
// ParseNetworks).
//
// # Host limits
//
// Config.Admission, when set, is the one seam to the limits: Admit is
// asked before each request, a job's (Send) or a result callback's
// (Post), whether it may start now (per-host concurrency and fleet-wide
// rate limits, see pkg/hostlimit): a callback URL comes from the same
// untrusted file and may aim at the very API the limits protect. A request
// not admitted is Postponed, with the Admission's wait as RetryAfter:
// nothing is sent and no attempt is spent. An admission is a Permit, which says whether a rate
// token was spent and takes the request's Feedback (status, latency,
// timeout) through Done, so that an adaptive limit can learn each host's
// capacity; for a 429 without Retry-After, Done answers the retry's delay.
// Admitted requests then take one of
// Config.MaxRequests places; one that spent a rate token and queued more
// than 50 ms for its place is deferred instead of sent, its token lost:
// tokens spent early and sent together would exceed the rate.
//
// # Redirects
//
// Redirects are followed up to Config.MaxRedirects, each target vetted by
// the guard. A redirect that leaves the origin of the job's URL (scheme,
// host or port: two ports of one host may be two services of different
// owners) reaches its target without Referer, which would repeat the
// previous URL and its query, and without any secret header: the built-in
// Authorization, Proxy-Authorization, Cookie and Set-Cookie, and those in
// Config.SecretHeaders. net/http itself drops only its own list, and only
// when the host name changes. Once a chain has left the origin, the
// secrets stay dropped even if it comes back.
//
// Error texts never contain header values, and URLs in them lose their
// userinfo: tokens often hide in both.
package sender
