// Package worker joins the queue and the sender: for every delivered job it
// makes one HTTP attempt and turns the outcome (a sender.Class) into exactly
// one queue.Decision. Failures end with a job.Reason.
//
//	sender says / job state      queue action      result
//	Succeeded                    AckWithResult     ok
//	Permanent                    AckWithResult     failed, reason permanent
//	                                               (refused: guard's address)
//	Retryable, tries left        NakAfterAttempt   after Retry-After, the
//	                                               host's pace (a 429 from an
//	                                               adaptive host) or backoff
//	                                               with full jitter
//	Retryable, tries spent       AckWithResult     failed, reason exhausted
//	                                               (breaker_open if the
//	                                               breaker took any try)
//	Postponed by the breaker,    NakAfter          a try spent, no attempt:
//	  tries left                                   back after the backoff for
//	                                               that try, or at the
//	                                               breaker's next probe
//	Postponed by the breaker,    AckWithResult     failed, reason breaker_open
//	  last try
//	Postponed by host limits     NakAfter          nothing spent, no slot held
//	                                               (OwnCapacity when a limit
//	                                               at its ceiling or a full
//	                                               worker held it: ready
//	                                               for the autoscaling signal)
//	callback host busy (before   NakAfter          nothing spent, no slot held
//	  the request)
//	cancelled by shutdown        HandBack          no attempt spent
//	older than max job age       AckWithResult     failed, reason expired
//	re-driven callback message   AckWithResult     the stored result, its
//	                                               callback's new outcome
//
// A job with a callback POSTs its result there before AckWithResult; the
// callback's outcome is part of the result, and a callback that finally
// failed gets a dead letter of its own (reason callback_failed). The POST
// asks the host limits like a job's request; turned away, it waits in the
// worker as long as they ask, spending no try, within MaxCallbackDefer. A
// job whose callback host has MaxCallbacksWaiting such callbacks already
// is deferred (NakAfter) before its request, so waiting callbacks never
// hold more than a few handlers per host.
//
// A job's tries are JETPOST_MAX_ATTEMPTS: HTTP attempts plus breaker
// turn-aways, both kept in the consumer's attempts record so they survive
// redelivery and crashes. A request let through by a half-open breaker is
// the probe: it is that job's attempt, and its outcome is that job's.
//
// Retries are not sleeps in the worker: the job goes back to JetStream with
// a delay. It survives a crash of this process and frees the slot for
// another host's job meanwhile. The package defines the small interfaces it
// needs (Sender, Consumer), so tests can substitute pure logic. The
// integration tests still run the real queue against a real server.
//
// With Config.Tracer set, each delivery runs inside a span (tracing.go):
// the request's and the callback's spans are its children, and its context
// goes into the attempts record (Delivery.Trace) for the next delivery's
// link. Without one, Handle pays a nil check.
//
// Service runs consumption, the background reporters (open breakers, host
// limits) and the operations endpoint (/healthz, /readyz, /metrics, and
// the console at / when one is given) as one errgroup: the first to fail
// stops the others. On
// cancellation the consumer stops pulling, hands back what has not started,
// and gives running requests the shutdown grace period.
//
// Package daemon (internal/worker/daemon) is the composition root that
// builds a Service from config and a NATS connection; cmd/worker and the
// benchmarks both use it, so what is measured is what ships.
package worker
