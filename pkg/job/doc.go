// Package job holds the types every other part of jetpost speaks: the Job a
// user describes in a file and a worker sends, the Result that comes back,
// the Reason a job failed and the BreakerState of its host.
//
// It is a leaf: standard library only, imported by everything, importing
// nothing of ours. Input parsing lives here too, because "what is a valid
// line" and "what is a valid message" are the same rules applied to the same
// type; workers run Validate again on what they pull, so a message published
// by something other than enqueue cannot bypass them.
//
// # Input
//
// A Decoder reads a job file as a stream, one entry at a time, so a file of
// millions of lines costs memory for one entry (at most MaxLineBytes) plus
// the id bookkeeping below, never for the file. The file is JSON Lines
// (blank lines ignored, CRLF accepted) unless its first non-white-space byte,
// after an optional UTF-8 byte order mark, is "[": then it is one JSON array
// of objects. Each invalid entry is a *LineError, "FILE:LINE: reason", with
// the line where the entry starts; decoding goes on with the next entry, so
// one run reports every bad line. Only a JSON array broken between its
// elements stops decoding, as the next element cannot be found.
//
// An entry must be an object of the fields in DESIGN.md ("id", "method",
// "url", "headers", "data", "json", "params", "callback", "reply_to",
// "timeout"); an unknown field is an error rather than ignored, so that a
// misspelt one is not silently lost (aiohttp keywords that are not fields
// say what to use instead), and null counts as absent. Batch and EnqueuedAt
// are left to the enqueuer. A first line that is not JSON but has
// separators (or a .csv/.tsv file) is one "looks like CSV" error for the
// whole file.
//
// # Bodies and query parameters
//
// "data", "json" and "params" mean what aiohttp's request(data=, json=,
// params=) makes of them (Body, RequestURL): a data string is sent as its
// text, a data object form-encoded as urlencode(doseq=True) does, json as
// the bytes written, params appended to the URL's query as yarl's
// extend_query does. All three are kept as the bytes written and Encode
// puts them on the wire unchanged, so the worker sends what the file said.
// What aiohttp would send in a Python spelling ("True") or refuse is refused
// by Validate (formPairs lists the rules).
//
// # Wire
//
// A job message on the jobs subject is an entry's fields plus those only
// the wire has (batch, enqueued_at, source, rate, redrive, kind, result).
// DecodeMessage holds a message from any producer to the rules of a file
// entry (the same defaults, normalisation, errors and limits), takes the
// batch from the subject and derives a missing id as the Decoder would
// for the first entry of that content. The schemas/ directory of the
// repository describes the format for other languages.
//
// # Policy
//
// A valid job may still ask more than a deployment allows: a reply_to
// outside the configured prefixes (never "$…", "_INBOX…" or the
// deployment's own subjects), a timeout above the ceiling. Policy.Check is
// that second rule set, applied by enqueue to every line and by workers to
// every message, from the same variables.
//
// # Identity
//
// A line without an "id" gets one derived from its own canonical JSON ("h-"
// and 20 hex digits of its SHA-256), with the values of secret headers
// (Decoder.SetSecretHeaders adds to the built-in ones), userinfo and secret
// query parameters replaced by Redacted first, so the id gives no credential
// away; never from its position, and the 2nd, 3rd… identical line of a
// file gets "-2", "-3"…, so re-enqueueing a file, even with lines added or
// reordered, maps each line to the job it already was and JetStream's
// de-duplication drops the repeat. No two entries of one file get the same
// id: an explicit id seen before, or one that equals an id derived in the
// same file, is an error on the later line. For that the Decoder remembers
// a fixed-size hash per explicit id and per distinct content, about 40 bytes
// each with map overhead (some 40 MB for a million distinct lines); repeated
// content costs nothing more.
//
// A job's identity across files and batches is its id and the Fingerprint
// of its request, computed without secrets the same way: the same id with
// another request is another job; a rotated credential is the same job.
package job
