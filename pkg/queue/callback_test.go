package queue

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
)

// Which dead letter a settled job leaves: a failed job's keeps the job as
// it was; an ok job whose callback failed keeps only the callback message
// (no headers, no body), with a reason of its own.
func TestDeadLetterOf(t *testing.T) {
	j := &job.Job{ID: "j1", Batch: "b", Method: "POST", URL: "https://api.example.com/x",
		Headers: map[string]string{"Authorization": "Bearer s3cret"}, Data: []byte(`{"a":1}`),
		Callback: "https://hooks.example.com/cb", Source: "f.jsonl:2"}
	msg, _ := job.Encode(j)
	failedCB := &job.CallbackResult{Status: 503, Attempts: 3, Error: "503 Service Unavailable"}
	tests := []struct {
		name       string
		j          *job.Job
		r          *job.Result
		wantReason string // "" for no dead letter
		wantDedup  string
	}{
		{"ok, callback ok", j, &job.Result{ID: "j1", Batch: "b", OK: true, Callback: &job.CallbackResult{OK: true, Status: 204}}, "", ""},
		{"ok, no callback", j, &job.Result{ID: "j1", Batch: "b", OK: true}, "", ""},
		{"failed", j, &job.Result{ID: "j1", Batch: "b", Reason: job.ReasonPermanent}, job.ReasonPermanent, "b/j1"},
		{"failed, callback failed too: the job's re-drive posts again", j, &job.Result{ID: "j1", Batch: "b", Reason: job.ReasonExhausted, Callback: failedCB}, job.ReasonExhausted, "b/j1"},
		{"ok, callback failed", j, &job.Result{ID: "j1", Batch: "b", OK: true, Callback: failedCB}, job.ReasonCallbackFailed, "b/j1"},
		{"re-driven callback failed again", j.CallbackMessage(&job.Result{ID: "j1", OK: true}), &job.Result{ID: "j1", Batch: "b", OK: true, Callback: failedCB}, job.ReasonCallbackFailed, "b/j1/callback/9"},
		{"re-driven callback delivered", j.CallbackMessage(&job.Result{ID: "j1", OK: true}), &job.Result{ID: "j1", Batch: "b", OK: true, Callback: &job.CallbackResult{OK: true}}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dl, dedup, err := deadLetterOf(tt.j, msg, 9, tt.r)
			if err != nil {
				t.Fatal(err)
			}
			if dl.Reason != tt.wantReason || dedup != tt.wantDedup {
				t.Fatalf("reason %q dedup %q, want %q %q", dl.Reason, dedup, tt.wantReason, tt.wantDedup)
			}
			switch tt.wantReason {
			case "":
				return
			case job.ReasonCallbackFailed:
				if strings.Contains(string(dl.Job), "s3cret") || strings.Contains(string(dl.Job), `"data"`) || strings.Contains(string(dl.Job), `"result"`) {
					t.Errorf("callback dead letter keeps more than the callback needs: %s", dl.Job)
				}
				var cm job.Job
				if err := json.Unmarshal(dl.Job, &cm); err != nil || cm.Kind != job.KindCallback || cm.Callback != j.Callback || cm.Source != j.Source {
					t.Errorf("callback message %s (%v)", dl.Job, err)
				}
			default:
				if string(dl.Job) != string(msg) {
					t.Errorf("a failed job's dead letter must keep the job as it was: %s", dl.Job)
				}
			}
			if dl.Result.Callback != tt.r.Callback || dl.StreamSeq != 9 {
				t.Errorf("dead letter %+v", dl)
			}
		})
	}
}

// A re-drive sends a failed job afresh, and a failed callback as a callback
// message carrying the stored result as the first POST sent it, keeping the
// job's run so the callback's key stays the same.
func TestRedriven(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	j := &job.Job{ID: "j1", Batch: "b", Method: "GET", URL: "https://api.example.com/x", Callback: "https://hooks.example.com/cb",
		Source: "f.jsonl:2", Redrive: 1, EnqueuedAt: now.Add(-time.Hour)}
	msg, _ := job.Encode(j)
	failed := StoredDeadLetter{DeadLetter: DeadLetter{Reason: job.ReasonExhausted, Job: msg, Result: job.Result{ID: "j1", Batch: "b", Reason: job.ReasonExhausted}}}
	got, err := redriven(failed, now)
	if err != nil || got.Kind != "" || got.Redrive != 2 || !got.EnqueuedAt.Equal(now) {
		t.Fatalf("job re-drive: %+v, %v", got, err)
	}

	stored := job.Result{ID: "j1", Batch: "b", OK: true, Status: 200, Body: "done", Source: "f.jsonl:2",
		Callback: &job.CallbackResult{Status: 503, Attempts: 3, Error: "503"}}
	cmsg, _ := job.Encode(j.CallbackMessage(nil))
	cb := StoredDeadLetter{DeadLetter: DeadLetter{Reason: job.ReasonCallbackFailed, Job: cmsg, Result: stored}}
	got, err = redriven(cb, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != job.KindCallback || got.Redrive != 1 || got.CallbackKey() != j.CallbackKey() || !got.EnqueuedAt.Equal(now) {
		t.Errorf("callback re-drive %+v, key %q want %q", got, got.CallbackKey(), j.CallbackKey())
	}
	if got.Result == nil || got.Result.Callback != nil || got.Result.Body != "done" || !got.Result.OK {
		t.Errorf("the callback message must carry the stored result without its callback outcome: %+v", got.Result)
	}

	cb.Job = []byte(`{"id":"j1","batch":"b","kind":"callback"}`)
	if _, err := redriven(cb, now); err == nil {
		t.Error("a callback message without a callback URL was accepted")
	}
}

// An invalid message's result says what can be known of it, cut to the
// sizes a valid job allows and with secrets redacted.
func TestInvalidResult(t *testing.T) {
	now := time.Now().UTC()
	why := errors.New("invalid job: url is missing")
	r := invalidResult(nil, "b", why, "w1", now)
	if r.ID != "" || r.Reason != job.ReasonInvalid || r.Error != why.Error() || r.Batch != "b" || r.Worker != "w1" {
		t.Errorf("not even JSON: %+v", r)
	}
	j := &job.Job{ID: strings.Repeat("i", 10_000), Method: "GET", URL: "ftp://u:pw@example.com/x?api_key=k123", Source: "f.jsonl:4"}
	r = invalidResult(j, "b", why, "w1", now)
	if len(r.ID) != job.MaxIDLen || r.Method != "GET" || r.Source != "f.jsonl:4" || strings.Contains(r.URL, "k123") || strings.Contains(r.URL, "pw") {
		t.Errorf("partly decoded: %+v", r)
	}
}
