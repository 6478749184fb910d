// Package tracing makes jetpost's OpenTelemetry spans, configured by the
// standard OTEL_* variables and off unless they ask for traces (Enabled):
// then no provider exists, callers hold a nil *Tracer, and a job pays one
// nil check.
//
// Spans follow the messaging and HTTP semantic conventions:
//
//   - "send {prefix}.jobs.{batch}" (producer), one per enqueue run, from
//     the run's start (validation included) until its jobs are published;
//     a child of TRACEPARENT when the process runs under one. Its context
//     goes on every job message as W3C traceparent/tracestate NATS headers:
//     one context per run rather than a "create" span per job, which would
//     cost a million spans for a million jobs and say nothing the delivery
//     spans do not.
//   - "process {prefix}.jobs.{batch}" (consumer), one per delivery of a job
//     to a worker. Its parent is the job's own traceparent request header
//     when the job has one (the most specific wish: this request belongs to
//     that trace), else the message's creation context; it links to the
//     creation context (jetpost.link.type=creation) and to the delivery
//     that last spent an attempt or a try on the job, here or on another
//     worker (previous_delivery), whose context the queue keeps in the
//     job's attempts record.
//   - "{METHOD}" (client), one per HTTP request sent, each hop of a
//     redirect its own; its context goes to the target as traceparent.
//   - "callback" (internal), one per result callback, parent of its POSTs.
//
// No header value is ever recorded, URLs pass through job.RedactURL, and
// transport errors are recorded by kind only: spans hold no secret.
package tracing
