// Package enqueue is the enqueue command's composition root and its parts:
// Run(ctx, Options) validates, connects (through Options.Connect),
// publishes and collects; the command keeps flags, configuration, the
// logger, the connection's options and the printing of the summary.
//
// Before publishing, Run writes the batch's entry in the batches bucket
// (queue.Batches): its weight (Options.Priority, kept from an existing
// entry when not given) and state, so workers see the batch at once; a
// cancelled batch is refused (CancelledError) before anything is
// published. The Summary counts cancelled results apart from failed ones.
//
// Two passes keep "validate first" and flat memory together. Prepare reads
// every input once (files or standard input, gzip told by its magic bytes),
// validates every entry and spools the valid jobs, already encoded for the
// wire, to an unlinked temporary file; nothing is published if an entry is
// invalid. Publish reads the spool back and publishes with a bounded window
// of unacknowledged publishes. Ahead of publishing it looks the jobs'
// completion markers up, 1024 per request, and skips jobs completed by an
// earlier run, so that a file enqueued again sends no request twice even
// after the jobs stream's dedup window has passed. A job whose earlier run
// failed before sending anything is sent again, as a new run of its own.
// Markers and dedup ids are keyed by identity, id and request fingerprint
// (spooled with each job), so a marker of the same id with another request
// is not this job's; a legacy marker, keyed by the id alone, refuses its
// job (identity.go).
//
// With --wait, a Collector expects exactly the spooled jobs (a compact
// hash set, about 10 bytes a job) and counts one result per job. One
// function feeds it, Collector.Collect: from the batch's result subject
// while publishing goes on, then from the publish report, which records
// (keyed by Collector.Key) the jobs whose results come from elsewhere: from
// the batches of earlier runs for jobs completed by an earlier run, and,
// through their markers, for jobs another run enqueued and has not
// completed yet. A batch id used again is read only past what was stored
// before the run: its older results, superseded ones among them, come
// through the markers, which point at the latest.
// Progress draws a bar on a terminal and a status line every few seconds
// elsewhere; a BreakerWatch adds the breakers the workers report open to it
// and to the summary.
package enqueue
