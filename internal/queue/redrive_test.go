package queue

import (
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
)

// A re-drive sends a failed job afresh, and a failed callback as a callback
// message carrying the stored result as the first POST sent it, keeping the
// job's run so the callback's key stays the same.
func TestRedriven(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	j := &job.Job{ID: "j1", Batch: "b", Method: "GET", URL: "https://api.example.com/x", Callback: "https://hooks.example.com/cb",
		Source: "f.jsonl:2", Redrive: 1, EnqueuedAt: now.Add(-time.Hour)}
	msg, _ := job.Encode(j)
	failed := StoredDeadLetter{DeadLetter: DeadLetter{Reason: job.ReasonExhausted, Job: msg, Result: job.Result{ID: "j1", Batch: "b", Reason: job.ReasonExhausted}}}
	got, err := redriven(failed, now, nil)
	if err != nil || got.Kind != "" || got.Redrive != 2 || !got.EnqueuedAt.Equal(now) {
		t.Fatalf("job re-drive: %+v, %v", got, err)
	}

	stored := job.Result{ID: "j1", Batch: "b", OK: true, Status: 200, Body: "done", Source: "f.jsonl:2",
		Callback: &job.CallbackResult{Status: 503, Attempts: 3, Error: "503"}}
	cmsg, _ := job.Encode(j.CallbackMessage(nil))
	cb := StoredDeadLetter{DeadLetter: DeadLetter{Reason: job.ReasonCallbackFailed, Job: cmsg, Result: stored}}
	got, err = redriven(cb, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != job.KindCallback || got.Redrive != 1 || got.CallbackKey() != j.CallbackKey() || !got.EnqueuedAt.Equal(now) {
		t.Errorf("callback re-drive %+v, key %q want %q", got, got.CallbackKey(), j.CallbackKey())
	}
	if got.Result == nil || got.Result.Callback != nil || got.Result.Body != "done" || !got.Result.OK {
		t.Errorf("the callback message must carry the stored result without its callback outcome: %+v", got.Result)
	}

	// Another producer's message, kept as it was published: no batch, no
	// method, no id. It re-drives as the job the worker ran.
	hand := []byte(`{"url":"https://api.example.com/y"}`)
	ran, err := job.DecodeMessage(hand, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	failed.Job, failed.Result = hand, job.Result{ID: ran.ID, Batch: "b", Reason: job.ReasonPermanent}
	got, err = redriven(failed, now, nil)
	if err != nil || got.ID != ran.ID || got.Batch != "b" || got.Method != "GET" || got.Redrive != 1 {
		t.Errorf("hand-published job re-drive: %+v, %v", got, err)
	}

	cb.Job = []byte(`{"id":"j1","batch":"b","kind":"callback"}`)
	if _, err := redriven(cb, now, nil); err == nil {
		t.Error("a callback message without a callback URL was accepted")
	}
}
