package schemas

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
)

func validator(t *testing.T) *Validator {
	t.Helper()
	v, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Every entry of the shipped example files, as enqueue encodes it for the
// wire, is a job message the schema accepts, and the worker decodes it to
// the same job.
func TestEnqueuedMessagesMatchTheSchema(t *testing.T) {
	v := validator(t)
	for _, file := range []string{"../examples/requests.jsonl", "../examples/compose-requests.jsonl"} {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		d := job.NewDecoder(f, file)
		for {
			j, err := d.Next()
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatal(err)
			}
			j.Batch, j.EnqueuedAt, j.Source = "b-1", time.Now().UTC(), job.SourceOf(file, d.Line())
			msg, err := job.Encode(j)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Validate(JobMessage, msg); err != nil {
				t.Errorf("%s: %v", msg, err)
			}
			if _, err := job.DecodeMessage(msg, "b-1", nil); err != nil {
				t.Errorf("worker refuses %s: %v", msg, err)
			}
		}
	}
}

// Messages the schema accepts are jobs the worker accepts; messages it
// refuses, the worker refuses too. Each pair is the same contract seen
// from a producer's side and from the worker's.
func TestSchemaAndWorkerAgree(t *testing.T) {
	v := validator(t)
	accepted := []string{
		`{"url":"https://api.example.com/x"}`,
		`{"id":"o-1","method":"post","url":"http://api.example.com:8080/o?x=1","headers":{"Content-Type":"text/plain","X-T":"a\tb"},"data":"hi"}`,
		`{"id":"o-2","batch":"b-1","url":"https://api.example.com/o","data":{"n":1.50,"s":"<&>"},"timeout":"1m30s","enqueued_at":"2026-12-05T19:00:00.123Z"}`,
		`{"id":"o-3","url":"https://api.example.com/o","timeout":2.5,"callback":"https://cb.example.com/r","reply_to":"replies.team-a","rate":10,"source":"f.jsonl:3","redrive":1}`,
		`{"id":"o-4","url":"https://api.example.com/o","json":[1, 2.50,"<&>"],"kind":""}`,
		`{"id":"o-6","method":"POST","url":"https://api.example.com/o?a=1","data":{"name":"x y","n":[1,"2"]},"params":{"q":"a&b","page":2}}`,
		`{"id":"o-7","url":"https://api.example.com/o","json":"text","params":{}}`,
		`{"id":"o-5","kind":"callback","callback":"https://cb.example.com/r","result":{"id":"o-5","batch":"b-1","ok":true,"status":200,"attempts":1,"error":"","body":"","body_truncated":false,"duration_ms":3,"worker":"w","finished_at":"2026-12-05T19:00:00Z"}}`,
	}
	policy := job.Policy{ReplyPrefixes: []string{"replies"}}
	for _, m := range accepted {
		if err := v.Validate(JobMessage, []byte(m)); err != nil {
			t.Errorf("schema refuses %s: %v", m, err)
		}
		j, err := job.DecodeMessage([]byte(m), "b-1", nil)
		if err == nil {
			err = policy.Check(j)
		}
		if err != nil {
			t.Errorf("worker refuses %s: %v", m, err)
		}
	}
	refused := []string{
		`{"method":"GET"}`,
		`{"url":"ftp://api.example.com/x"}`,
		`{"url":"https://api.example.com/x","heders":{}}`,
		`{"url":"https://api.example.com/x","method":"GE T"}`,
		`{"url":"https://api.example.com/x","id":""}`,
		`{"url":"https://api.example.com/x","id":" padded"}`,
		`{"url":"https://api.example.com/x","id":"` + strings.Repeat("i", 257) + `"}`,
		`{"url":"https://api.example.com/x","headers":{"X":1}}`,
		`{"url":"https://api.example.com/x","headers":{"X":"a\nb"}}`,
		`{"url":"https://api.example.com/x","timeout":"soon"}`,
		`{"url":"https://api.example.com/x","timeout":-1}`,
		`{"url":"https://api.example.com/x","batch":"a.b"}`,
		`{"url":"https://api.example.com/x","kind":"other"}`,
		`{"url":"https://api.example.com/x","rate":-1}`,
		`{"url":"https://api.example.com/x","reply_to":"a..b"}`,
		`{"url":"https://api.example.com/x","enqueued_at":"yesterday"}`,
		`["https://api.example.com/x"]`,
		`{"url":"https://api.example.com/x","data":"a","json":{}}`,
		`{"url":"https://api.example.com/x","data":[1,2]}`,
		`{"url":"https://api.example.com/x","data":{"a":true}}`,
		`{"url":"https://api.example.com/x","params":"a=1"}`,
		`{"url":"https://api.example.com/x","params":{"a":{"b":1}}}`,
	}
	for _, m := range refused {
		if err := v.Validate(JobMessage, []byte(m)); err == nil {
			t.Errorf("schema accepts %s", m)
		}
		j, err := job.DecodeMessage([]byte(m), "b-1", nil)
		if err == nil {
			err = policy.Check(j)
		}
		if err == nil {
			t.Errorf("worker accepts %s", m)
		}
	}
}

// Results and dead letters as the code encodes them match their schemas,
// and a record missing a required field does not.
func TestResultRecordsMatchTheSchema(t *testing.T) {
	v := validator(t)
	at := time.Date(2026, 12, 5, 19, 0, 0, 0, time.UTC)
	for _, r := range []*job.Result{
		{ID: "1", Batch: "b", Method: "GET", URL: "https://x.example.com/?key=REDACTED", OK: true, Status: 200, Attempts: 1, Body: "{}", DurationMS: 5, Worker: "w", FinishedAt: at},
		{ID: "2", Batch: "b", OK: false, Status: 503, Attempts: 5, Error: "HTTP 503", Reason: job.ReasonExhausted, Worker: "w", FinishedAt: at, Source: "f:2",
			Callback: &job.CallbackResult{OK: false, Status: 0, Attempts: 3, Error: "refused"}},
		{Batch: "invalid", Reason: job.ReasonInvalid, Error: "invalid job: url is missing", Worker: "w", FinishedAt: at},
	} {
		b, err := job.EncodeResult(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(Result, b); err != nil {
			t.Errorf("%s: %v", b, err)
		}
		dl := `{"result":` + string(b) + `,"job":{"url":1},"stream_seq":7}`
		if err := v.Validate(DeadLetter, []byte(dl)); err != nil {
			t.Errorf("%s: %v", dl, err)
		}
	}
	for _, bad := range []string{
		`{"id":"1","batch":"b","ok":true}`,
		`{"id":"1","batch":"b","ok":false,"status":0,"attempts":0,"error":"x","body":"","body_truncated":false,"duration_ms":0,"worker":"w","finished_at":"2026-12-05T19:00:00Z"}`,
		`{"id":"1","batch":"b","ok":true,"status":200,"attempts":1,"error":"","body":"","body_truncated":false,"duration_ms":0,"worker":"w","finished_at":"now"}`,
	} {
		if err := v.Validate(Result, []byte(bad)); err == nil {
			t.Errorf("schema accepts %s", bad)
		}
	}
}
