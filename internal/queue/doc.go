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
//	JETPOST_ATTEMPTS   KV, by stream sequence   attempts and breaker turn-aways per job (and, traced, the last delivery's traceparent)
//	JETPOST_BREAKERS   KV, by host and worker   breakers that are not closed (auxiliary)
//	JETPOST_RATES      KV, by host              fleet-wide rate limit state (fleetrate; auxiliary)
//	JETPOST_HOSTLIMITS KV, by worker            posted host limits (fleetrate; auxiliary)
//
// EnsureStores creates the streams and the done (and, for workers,
// attempts) bucket, or brings them to their shape and JETPOST_REPLICAS
// (raised, never lowered), idempotently and with every call bounded, so
// processes starting together against a slow cluster all come up
// (ensure.go). The breakers, rates and host limits buckets are auxiliary
// (AuxBucket, aux.go): a worker starts without them and keeps trying them
// in the background. Replication reports where each store stands. Publisher and BulkPublisher publish
// asynchronously with a bounded window of unacknowledged publishes and
// Nats-Msg-Id = job id, so a file enqueued twice creates no second job
// within the dedup window.
//
// Consumer is the worker side. Each batch's jobs are taken through a
// durable pull consumer of their own, a lane (lanes.go): filter = the
// batch's subject, explicit acks, MaxDeliver -1, InactiveThreshold as the
// backstop cleanup. Workers find the batches with jobs from the stream's
// subject counts (every second, at once when the batches bucket changes or
// the subject count moves), drop a lane whose subject is empty and delete
// its consumer once nothing is pending on it (paused, then looked at again,
// so a job published meanwhile is not delivered twice); every 15 s a sweep
// retires the batch consumers no lane owns that have nothing to do (one
// made again just as another worker deleted it). The consumer the workers of
// earlier versions shared is deleted at start (a work-queue stream refuses
// overlapping consumers): stop old workers before starting new ones.
//
// Fair share (dispatch.go): every request place (MaxInflight) that frees
// goes to the lane with jobs ready and the smallest virtual time (stride
// scheduling, each place adding 1/weight); a lane back from idle starts at
// the current minimum, so idling earns no credit, and a lone batch gets
// every place. Pulls follow the shares: the window of MaxInflight running
// plus Prefetch waiting is split by weight, each lane refilling its part
// once half the prefetch's worth is free (exactly the former single
// consumer's rhythm for a lone batch). Such a pull takes what the lane can
// deliver at once (no wait): one on a lane whose jobs are all in other
// workers' hands would hold its part of the window for nothing until it
// expired. A lane whose pull found nothing to deliver at once turns cold: one long pull of one job (coldWait), at most
// maxColdPulls at a time, outside the window, so a thousand idle lanes cost
// a bounded number of pulls per second and a deferred job coming due still
// arrives at once. It does not use the library's buffered iterators on
// purpose: a message's ack timer starts when the server sends it, so every
// fetched message must be ours, kept alive with InProgress while it waits
// or runs. Otherwise a slow target makes buffered messages expire and be
// sent twice.
//
// Batch states (fence.go), from the batches bucket's view or at once from
// a fence request (<prefix>.fleet.batch, which enqueue pause, resume and
// cancel send): a paused lane is not pulled and its fetched jobs are
// handed back (its consumer is paused on the server too); a cancelled lane
// is drained outside the places, each job settled with a result of reason
// cancelled through the normal path (marker, one result, ack; no dead
// letter); a worker checks its batch's state again right before each
// request (Delivery.BatchState). A fence reply says how many of the
// batch's jobs the worker still has in a place.
//
// Trade-offs. One consumer per active batch is one Raft group per batch in
// a cluster, created on the batch's first discovery (a few milliseconds,
// more on a cluster) and deleted when it drains: cheap for a thousand
// active batches, not for a million. It buys JetStream's own per-batch ack
// state, redelivery, pause and MaxAckPending, which a worker-side split of
// one consumer cannot give (a batch's buffered jobs would hold everyone's
// window). Priority groups pin or overflow between clients, not between
// subjects, so they do not share by batch. Stride scheduling is exact to
// one place over any stretch and costs a heap operation per dispatch;
// lottery scheduling is only fair on average. A consumer made again (after
// a cancel, or its inactivity) may deliver jobs an earlier one delivered:
// a job stored before its lane's consumer was created is looked up like a
// redelivery (early.go, a direct get per burst of jobs).
//
// A handler's Decision maps to exactly one settlement (settle.go):
//
//	AckWithResult    store result, completion marker (+ dead letter if
//	                 failed), then an Ack the server does not confirm
//	                 (the stored marker settles a redelivery should it be
//	                 lost; confirmed if the marker could not be stored,
//	                 and for callback messages); result and dead letter
//	                 are cut to the server's maximum payload (the response
//	                 body first), as a message refused for its size would
//	                 never be stored
//	NakAfterAttempt  record attempts in the attempts bucket,
//	                 NakWithDelay(backoff)
//	NakAfter         NakWithDelay without spending an attempt (a breaker's
//	                 turn-away is recorded); a park (host limits) is not
//	                 confirmed: lost, it only delays the job
//	HandBack         Nak: redeliver now, to another worker (shutdown)
//
// Results are published with a dedup id of batch/job identity (and run),
// and the job is acked only after the result and its marker are stored, so
// a redelivery after a lost ack cannot store a second result nor send the
// request again. Placed jobs run on a pool of goroutines that outlive them
// (placers.go). The completion marker, written right after the result, lets enqueue (DoneIndex, a bulk
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
// redeliveries (not on those of a job this worker deferred itself, whose
// counts it remembers: recall.go) and written only on retries and
// turn-aways, so the happy path pays nothing for it.
//
// Losing a cluster node (rescue.go, reack.go, settle.go): acks of jobs
// without a stored marker, and NAKs that are not parks, are confirmed with
// short tries that reach the consumer's next leader, and given up after a
// minute. Acks of jobs whose result and marker are stored, and parks, are
// not confirmed. A redelivery whose completion marker names its job
// message (an ack lost with a server, or never confirmed) is acked from
// the stored result, never sent again.
//
// A consumer leader that dies or steps down loses the acks and NAKs sent
// to it, and the deliveries it had agreed on with its followers but not
// sent; its successor would hold those jobs until their ack wait.
//
// Lost acks: each worker remembers its last unconfirmed acks and sends
// them again when JetStream announces that a lane's consumer elected a new
// leader, when its connection comes back, and on each sign below (safe on
// every worker at once: the jobs are finished).
//
// Lost deliveries and NAKs: on a sign (a pull the server never ended, the
// first pull that works after failures, a consumer a pull could not reach
// found again, an ack or NAK whose confirmation did not come) one worker
// at a time (a lock in the attempts bucket) reads the state of every
// lane's consumer with jobs pending, waits a grace period, asks every
// worker which jobs it holds or has deferred, by lane (a core NATS request
// on <prefix>.fleet.held; answers are collected for a second, and on, up
// to 5 s, until every worker on the limits board answered), and NAKs the
// other pending ones on their lane's consumer, which come back at once. A
// leader's election alone does not start it: a rescue NAKs what a worker
// it did not hear from holds.
//
// Files, one concept each: names.go, setup.go, ensure.go, aux.go,
// payload.go, retry.go;
// the worker side: handler.go (the contract), consumer.go (Run), lanes.go
// (a consumer per batch, discovery), dispatch.go (fair places and pulls),
// fetch.go (pulls, keepalives), placers.go (the goroutines that run placed
// jobs), recall.go (what a worker knows of its own deferrals), early.go
// (lookups of jobs that may have run), fence.go (batch states), inbound.go
// (what a message on the jobs subject may claim), republished.go,
// attempts.go, settle.go, rescue.go, reack.go (unconfirmed acks sent
// again), background.go (rescues and re-sent acks, one at a time),
// invalid.go, readiness.go (jobs ready to send now, for autoscaling),
// failures.go (settling failures, for alerts), traceheaders.go (trace
// context in job messages), batches.go (weights and states), known.go
// (whether a batch exists); enqueue's side: publish.go, bulk.go, done.go
// (markers, DoneIndex), control.go (pause, resume, cancel and their
// fence); readers: reader.go (the one ordered stream reader), results.go,
// deadletter.go, redrive.go, status.go, replication.go, breakers.go.
package queue
