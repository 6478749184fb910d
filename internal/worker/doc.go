// Package worker joins the queue and the sender: for every delivered job it
// makes one HTTP attempt and turns the outcome into exactly one decision.
//
//	success                 -> Complete (ok result)
//	permanent (4xx, refused)-> Complete (failed result + dead letter)
//	retryable, tries left   -> Retry after Retry-After, the host's pace (a 429
//	                           from an adaptive host) or backoff with full jitter
//	retryable, tries spent  -> Complete (failed, reason exhausted; breaker_open
//	                           if the breaker turned any try away)
//	breaker open, tries left-> Defer, a try spent but no attempt: back after
//	                           the backoff for that try, or at the breaker's
//	                           next probe if sooner
//	breaker open, tries     -> Complete (failed, reason breaker_open)
//	  spent
//	host limit reached      -> Defer (nothing spent, no slot held)
//	cancelled by shutdown   -> HandBack (no attempt spent)
//	older than max job age  -> Complete (failed, reason expired)
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
// Service runs consumption, the background reporters (open breakers, host
// limits) and the operations endpoint (/healthz, /readyz, /metrics) as one
// errgroup: the first to fail stops the others. On
// cancellation the consumer stops pulling, hands back what has not started,
// and gives running requests the shutdown grace period.
package worker
