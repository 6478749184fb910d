// Package queue is jetpost's storage protocol on NATS JetStream: how jobs,
// results, dead letters, attempt counts and completion markers are laid out
// and settled. It is not a general-purpose queue library; its API is shaped
// by jetpost's worker and enqueue and changes with them, hence internal/.
// It knows nothing of HTTP.
//
// Streams and buckets (names.go derives every name from the subject prefix,
// "jetpost" by default):
//
//	JETPOST_JOBS       jetpost.jobs.<batch>     work queue, de-duplicated by job id
//	JETPOST_RESULTS    jetpost.results.<batch>  one result per job and run, kept for a max age
//	JETPOST_DLQ        jetpost.dlq.<batch>      finally failed and undecodable jobs
//	JETPOST_DONE       KV, by job id hash       completion markers (TTL: results max age)
//	JETPOST_ATTEMPTS   KV, by stream sequence   attempts and breaker turn-aways per job
//	JETPOST_BREAKERS   KV, by host and worker   breakers that are not closed
//
// Setup creates the streams and the done bucket, idempotently, so whichever
// process starts first lays them out. Publisher and BulkPublisher publish
// asynchronously with a bounded window of unacknowledged publishes and
// Nats-Msg-Id = job id, so a file enqueued twice creates no second job
// within the dedup window.
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
// A handler's Decision maps to exactly one settlement (settle.go):
//
//	AckWithResult    store result, completion marker (+ dead letter if
//	                 failed), then a confirmed Ack; result and dead letter
//	                 are cut to the server's maximum payload (the response
//	                 body first), as a message refused for its size would
//	                 never be stored
//	NakAfterAttempt  record attempts in the attempts bucket,
//	                 NakWithDelay(backoff)
//	NakAfter         NakWithDelay without spending an attempt (a breaker's
//	                 turn-away is recorded)
//	HandBack         Nak: redeliver now, to another worker (shutdown)
//
// Results are published with a dedup id of batch/job identity (and run),
// and the job is acked only after the result is stored, so a redelivery
// after a lost ack cannot store a second result. The completion marker,
// written without waiting after the result, lets enqueue (DoneIndex, a bulk
// lookup) send nothing twice when a file is enqueued again after the dedup
// window, and return the earlier results. A job's identity, in every dedup
// id and marker key, is its id and its request's fingerprint (Names.
// Fingerprint, without secrets): the same id with another request is
// another job. enqueue looks markers up before it publishes; a message from
// another producer (without enqueue's Nats-Msg-Id) is looked up by the
// worker before its request (republished.go), so publishing it again after
// the dedup window, or without a Nats-Msg-Id, does not send it twice.
//
// Attempts are kept by stream sequence because JetStream's delivery count
// also counts deferrals and hand-backs. The bucket is read only on
// redeliveries and written only on retries and turn-aways, so the happy
// path pays nothing for it.
//
// Files, one concept each: names.go, setup.go, payload.go, retry.go;
// the worker side: handler.go (the contract), consumer.go (Run), fetch.go
// (the fetch loop, keepalives), inbound.go (what a message on the jobs
// subject may claim), republished.go, attempts.go, settle.go, invalid.go; enqueue's
// side: publish.go, bulk.go, done.go (markers, DoneIndex); readers:
// reader.go (the one ordered stream reader), results.go, deadletter.go,
// redrive.go, status.go, breakers.go.
package queue
