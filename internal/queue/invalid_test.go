package queue

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
)

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
