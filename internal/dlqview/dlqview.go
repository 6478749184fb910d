// Package dlqview shows dead letters to people: the reason and the failed
// result (Summary, what the console lists), and with Redact the job
// decoded with its secrets redacted (enqueue dlq). Both go through it, so
// what one shows the other shows alike.
package dlqview

import (
	"cmp"
	"encoding/json"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// Shown is a dead letter as listed: with Redact, the job decoded, its
// secret header values, secret parameters and URL credentials replaced;
// with Summary, no job.
type Shown struct {
	Seq    uint64          `json:"seq"`
	Reason job.Reason      `json:"reason"`
	Result job.Result      `json:"result"`
	Job    json.RawMessage `json:"job"`
}

// Summary is dl as it may be shown, without its job: what a listing that
// never shows the job (the console's) needs, without decoding it.
func Summary(dl queue.StoredDeadLetter) Shown {
	out := Shown{Seq: dl.Seq, Reason: cmp.Or(dl.Reason, dl.Result.Reason), Result: dl.Result}
	// Stored by a worker, possibly of an older version whose rule knew
	// fewer secret parameter names.
	out.Result.URL = job.RedactURL(out.Result.URL)
	return out
}

// Redact is dl as it may be shown, with its job; secret names the
// configured extra secret headers (JETPOST_REDACT_HEADERS).
func Redact(dl queue.StoredDeadLetter, secret []string) Shown {
	out := Summary(dl)
	out.Job = dl.Job
	if dl.JobOmitted != "" {
		out.Job, _ = json.Marshal("(not kept: " + dl.JobOmitted + ")")
		return out
	}
	var j job.Job
	if err := json.Unmarshal(dl.Job, &j); err == nil {
		j.Headers = job.RedactHeaders(j.Headers, secret)
		j.URL, j.Callback, j.Params = job.RedactURL(j.URL), job.RedactURL(j.Callback), job.RedactParams(j.Params)
		if b, err := json.Marshal(&j); err == nil {
			out.Job = b
		}
		return out
	}
	// Not a job at all (a poison message): its text may hold anything,
	// including credentials, so it is not shown.
	out.Job = json.RawMessage(`"(not a valid job; content withheld)"`)
	return out
}

// Line is the one-line account of a dead letter: its reason, the last
// HTTP status, attempts and error; for a failed callback, the callback's.
func Line(dl Shown) (reason job.Reason, status, attempts int, msg string) {
	r := dl.Result
	reason, status, attempts, msg = dl.Reason, r.Status, r.Attempts, r.Error
	if cb := r.Callback; dl.Reason == job.ReasonCallbackFailed && cb != nil {
		// The job is fine; the line is about its callback.
		status, attempts, msg = cb.Status, cb.Attempts, "callback: "+cb.Error
	}
	return reason, status, attempts, msg
}
