// Package console is the live console a worker serves at / of
// JETPOST_HTTP_ADDR: batches with progress, rate, ETA and outcome counts;
// each worker's limits and breaker per host; dead letters with their
// reasons (redacted as enqueue dlq redacts them, and without the job or
// response bodies: the read-only view needs no token); and, with
// JETPOST_CONSOLE_TOKEN set, pause, resume, cancel and re-drive.
//
// The state lives in NATS, so every worker shows the same. One snapshot
// is read per tick (queue.Status, the limits board and the breakers
// bucket, the numbers enqueue status prints) and fanned out to every
// viewer over server-sent events, and only while someone watches.
// Actions take the token as "Authorization: Bearer" (never a cookie, so a
// page elsewhere cannot ride on a session, nor set the header without a
// CORS preflight that is never granted), by POST only. The page is
// plain HTML, CSS and JavaScript embedded in the binary: no build step,
// nothing fetched from elsewhere.
package console
