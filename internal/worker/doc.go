// Package worker joins the queue and the sender: for every delivered job it
// makes one HTTP attempt and turns the outcome into exactly one decision.
//
//	success                 -> Complete (ok result)
//	permanent (4xx, refused)-> Complete (failed result + dead letter)
//	retryable, budget left  -> Retry after Retry-After, the host's pace (a 429
//	                           from an adaptive host) or backoff with full jitter
//	retryable, budget spent -> Complete (failed, reason exhausted)
//	breaker open, or host   -> Defer (no attempt spent, no slot held)
//	  limit reached
//	cancelled by shutdown   -> HandBack (no attempt spent)
//	older than max job age  -> Complete (failed, reason expired)
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
