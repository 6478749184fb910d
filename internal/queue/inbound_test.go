package queue

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
)

// A failed job's dead letter keeps its message byte for byte, and its
// re-drive sends the body the file had: encoding/json would have compacted
// and HTML-escaped it (issue 14, point 7).
func TestDeadLetterAndRedriveKeepDataBytes(t *testing.T) {
	const data = "{\"sig\": \"<&>\",\n  \"n\" : 1.50}"
	j := &job.Job{ID: "j1", Batch: "b", Method: "POST", URL: "https://api.example.com/x", JSON: json.RawMessage(data), EnqueuedAt: time.Unix(1764240000, 0).UTC()}
	msg, err := job.Encode(j)
	if err != nil {
		t.Fatal(err)
	}
	r := &job.Result{ID: "j1", Batch: "b", Status: 400, Reason: job.ReasonPermanent, Error: "bad <request>"}
	b, err := encodeDeadLetter(DeadLetter{Result: *r, Job: msg, StreamSeq: 3, Reason: r.Reason}, 1<<20, "too large")
	if err != nil {
		t.Fatal(err)
	}
	var dl DeadLetter
	if err := json.Unmarshal(b, &dl); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	if string(dl.Job) != string(msg) || dl.Result.Error != r.Error || dl.StreamSeq != 3 {
		t.Fatalf("dead letter %s does not keep the job message %s as it was", b, msg)
	}
	again, err := redriven(StoredDeadLetter{DeadLetter: dl, Seq: 1}, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := job.Encode(again)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := job.Decode(wire)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := sent.Body(); string(body) != data {
		t.Errorf("re-drive sends %q, want %q", body, data)
	}
	if !strings.Contains(string(wire), data) {
		t.Errorf("re-driven message %s", wire)
	}
}
