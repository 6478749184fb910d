package dlqview

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// A dead letter is shown without its secrets: the standard secret headers,
// the configured ones, secret query parameters and URL credentials, in the
// job and in the result. A message that is not a job is withheld whole.
func TestRedact(t *testing.T) {
	j := job.Job{ID: "a", Batch: "b", Method: "POST", URL: "https://user:pw-secret@api.example/x?api_key=q-secret&n=1",
		Headers: map[string]string{"Authorization": "Bearer h-secret", "X-Api-Key": "c-secret", "Accept": "text/plain"}}
	raw, err := json.Marshal(&j)
	if err != nil {
		t.Fatal(err)
	}
	dl := queue.StoredDeadLetter{Seq: 7}
	dl.Reason, dl.Job = job.ReasonPermanent, raw
	dl.Result = job.Result{ID: "a", Batch: "b", URL: j.URL, Status: 400, Attempts: 1, Error: "status 400"}
	shown := Redact(dl, []string{"X-Api-Key"})
	out, _ := json.Marshal(shown)
	if strings.Contains(string(out), "secret") {
		t.Errorf("a secret is shown: %s", out)
	}
	if !strings.Contains(string(out), "text/plain") || !strings.Contains(string(out), "n=1") || shown.Seq != 7 {
		t.Errorf("more than the secrets went: %s", out)
	}
	if reason, status, attempts, msg := Line(shown); reason != job.ReasonPermanent || status != 400 || attempts != 1 || msg != "status 400" {
		t.Errorf("line: %s %d %d %q", reason, status, attempts, msg)
	}

	dl.Job = json.RawMessage(`"Authorization: Bearer p-secret"`)
	if out, _ := json.Marshal(Redact(dl, nil)); strings.Contains(string(out), "p-secret") {
		t.Errorf("a poison message's text is shown: %s", out)
	}
}
