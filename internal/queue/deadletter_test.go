package queue

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/jetpost/jetpost/pkg/job"
)

// A dead letter keeps its job for re-drive whenever the job fits: the
// failure's body gives way first, and only a job too close to the limit to
// share a message with its failure is left out, saying so.
func TestDeadLetterFitsTheLimit(t *testing.T) {
	jobMsg := []byte(`{"id":"j1","url":"https://api.example.com/x","data":"` + strings.Repeat("d", 10_000) + `"}`)
	r := &job.Result{ID: "j1", Batch: "b", Status: 404, Reason: job.ReasonPermanent, Error: "not found", Body: strings.Repeat("b", 5_000)}
	decode := func(t *testing.T, b []byte, limit int) DeadLetter {
		t.Helper()
		if len(b) > limit {
			t.Fatalf("dead letter of %d bytes, over the limit of %d", len(b), limit)
		}
		var dl DeadLetter
		if err := json.Unmarshal(b, &dl); err != nil {
			t.Fatal(err)
		}
		return dl
	}
	for _, tc := range []struct {
		name              string
		limit             int
		wantJob, wantBody bool
		wantOmitted       bool
	}{
		{"everything fits", 1 << 20, true, true, false},
		{"the body gives way", len(jobMsg) + 1_000, true, false, false},
		{"the job is too close to the limit", len(jobMsg) + 50, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := encodeDeadLetter(DeadLetter{Result: *r, Job: jobMsg, StreamSeq: 7}, tc.limit, "too large")
			if err != nil {
				t.Fatal(err)
			}
			dl := decode(t, b, tc.limit)
			if got := string(dl.Job) == string(jobMsg); got != tc.wantJob {
				t.Errorf("job kept: %v, want %v", got, tc.wantJob)
			}
			if got := dl.Result.Body == r.Body; got != tc.wantBody {
				t.Errorf("body kept: %v, want %v", got, tc.wantBody)
			}
			if !tc.wantBody && !dl.Result.BodyTruncated {
				t.Error("body dropped without body_truncated")
			}
			if got := dl.JobOmitted != ""; got != tc.wantOmitted {
				t.Errorf("job_omitted %q", dl.JobOmitted)
			}
			if dl.Result.ID != "j1" || dl.Result.Status != 404 || dl.Result.Error != "not found" || dl.StreamSeq != 7 {
				t.Errorf("the failure itself was not kept: %+v seq %d", dl.Result, dl.StreamSeq)
			}
		})
	}

	t.Run("hostile free text is cut", func(t *testing.T) {
		// An invalid message's id and error are whatever it held; escaped,
		// each "<" takes six bytes.
		hostile := &job.Result{ID: strings.Repeat("<", 20_000), Batch: "b", Reason: job.ReasonInvalid, Error: strings.Repeat("&", 20_000),
			Callback: &job.CallbackResult{Status: 500, Error: strings.Repeat(">", 20_000)}}
		limit := 20 << 10 // room for the job, not for the job and 120 KB of escapes
		b, err := encodeDeadLetter(DeadLetter{Result: *hostile, Job: jobMsg, StreamSeq: 7}, limit, "too large")
		if err != nil {
			t.Fatal(err)
		}
		dl := decode(t, b, limit)
		if dl.JobOmitted == "" || len(dl.Result.ID) > job.MaxIDLen || len(dl.Result.Error) > 1<<10 || len(dl.Result.Callback.Error) > 1<<10 {
			t.Errorf("not cut down: omitted %q, id %d bytes, error %d, callback error %d", dl.JobOmitted, len(dl.Result.ID), len(dl.Result.Error), len(dl.Result.Callback.Error))
		}
		if dl.Result.Reason != job.ReasonInvalid || dl.Result.Callback.Status != 500 {
			t.Errorf("the failure itself was not kept: %+v", dl.Result)
		}
	})
	t.Run("a limit nothing fits under", func(t *testing.T) {
		if _, err := encodeDeadLetter(DeadLetter{Result: *r, Job: jobMsg, StreamSeq: 7}, 100, "too large"); !errors.Is(err, nats.ErrMaxPayload) {
			t.Errorf("err %v, want one wrapping nats.ErrMaxPayload", err)
		}
	})
}

// Which dead letter a settled job leaves: a failed job's keeps the job as
// it was; an ok job whose callback failed keeps only the callback message
// (no headers, no body), with a reason of its own.
func TestDeadLetterOf(t *testing.T) {
	j := &job.Job{ID: "j1", Batch: "b", Method: "POST", URL: "https://api.example.com/x",
		Headers: map[string]string{"Authorization": "Bearer s3cret"}, Data: []byte(`{"a":1}`),
		Callback: "https://hooks.example.com/cb", Source: "f.jsonl:2"}
	msg, _ := job.Encode(j)
	fp := j.Fingerprint(nil, nil)
	jobDedup := "b/j1/" + fp.String()
	failedCB := &job.CallbackResult{Status: 503, Attempts: 3, Error: "503 Service Unavailable"}
	tests := []struct {
		name       string
		j          *job.Job
		r          *job.Result
		wantReason job.Reason // "" for no dead letter
		wantDedup  string
	}{
		{"ok, callback ok", j, &job.Result{ID: "j1", Batch: "b", OK: true, Callback: &job.CallbackResult{OK: true, Status: 204}}, "", ""},
		{"ok, no callback", j, &job.Result{ID: "j1", Batch: "b", OK: true}, "", ""},
		{"failed", j, &job.Result{ID: "j1", Batch: "b", Reason: job.ReasonPermanent}, job.ReasonPermanent, jobDedup},
		{"failed, callback failed too: the job's re-drive posts again", j, &job.Result{ID: "j1", Batch: "b", Reason: job.ReasonExhausted, Callback: failedCB}, job.ReasonExhausted, jobDedup},
		{"ok, callback failed", j, &job.Result{ID: "j1", Batch: "b", OK: true, Callback: failedCB}, job.ReasonCallbackFailed, jobDedup},
		{"re-driven callback failed again", j.CallbackMessage(&job.Result{ID: "j1", OK: true}), &job.Result{ID: "j1", Batch: "b", OK: true, Callback: failedCB}, job.ReasonCallbackFailed, "b/j1/callback/9"},
		{"re-driven callback delivered", j.CallbackMessage(&job.Result{ID: "j1", OK: true}), &job.Result{ID: "j1", Batch: "b", OK: true, Callback: &job.CallbackResult{OK: true}}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dl, dedup, err := deadLetterOf(tt.j, fp, msg, 9, tt.r)
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
