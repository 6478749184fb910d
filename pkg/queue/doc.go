// Package queue is jetpost's JetStream layer and knows nothing of HTTP.
//
// Streams (names derive from the subject prefix, "jetpost" by default):
//
//	JETPOST_JOBS     jetpost.jobs.<batch>     work queue, de-duplicated by job id
//	JETPOST_RESULTS  jetpost.results.<batch>  one result per job, kept for a max age
//	JETPOST_DLQ      jetpost.dlq.<batch>      finally failed and undecodable jobs
//
// Setup creates or updates them idempotently, so whichever process starts
// first lays them out. Publisher publishes asynchronously with a bounded
// window of unacknowledged publishes and Nats-Msg-Id = job id, so a file
// enqueued twice creates no second job within the dedup window.
//
// Consumer is the worker side. All workers share one durable pull consumer.
// Each process pulls with Fetch into a window of MaxInflight running plus
// Prefetch waiting messages, and refills it in one request once half the
// prefetch is free. It does not use the library's buffered iterators on
// purpose: a message's ack timer starts when the server sends it, so every
// fetched message must be ours, kept alive with InProgress while it waits or
// runs. Otherwise a slow target makes buffered messages expire and be sent
// twice.
//
// A handler's Decision maps to exactly one settlement:
//
//	Complete  store result (+ dead letter if failed), then Ack; both are
//	          cut to the server's maximum payload (the response body first),
//	          as a message refused for its size would never be stored
//	Retry     record attempts in a KV bucket, NakWithDelay(backoff)
//	Defer     NakWithDelay without spending an attempt
//	HandBack  Nak: redeliver now, to another worker (shutdown)
//
// Completion markers live in a second KV bucket, JETPOST_DONE, keyed by a
// hash of the job id. A worker writes one, without waiting for it, after
// storing a result; enqueue looks them up in bulk before publishing. That
// way a file enqueued again after the dedup window sends nothing twice, and
// the earlier results can be returned. Setup creates this bucket;
// NewConsumer creates the attempts bucket.
//
// Attempts live in a KV bucket keyed by stream sequence. JetStream's
// delivery count also counts deferrals and hand-backs, so it cannot serve
// as the attempt count. The bucket is read only on redeliveries and written
// only on retries, so the happy path pays nothing for it. Results are
// published with a dedup id of batch/job id, and the job is acked only after
// the result is stored. A redelivery after a lost ack therefore cannot store
// a second result.
package queue
