package worker_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/pkg/job"
)

// bodyRecorder is a target that keeps every request body it was sent.
type bodyRecorder struct {
	mu     sync.Mutex
	bodies []string
}

func (b *bodyRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	b.bodies = append(b.bodies, string(body))
	b.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (b *bodyRecorder) sent() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.bodies...)
}

// nextRecords reads n messages of subject from stream, in order.
func nextRecords(t *testing.T, js jetstream.JetStream, stream, subject string, n int) [][]byte {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for i := range n {
		m, err := cons.Next(jetstream.FetchMaxWait(60 * time.Second)) // bounds a broken test only
		if err != nil {
			t.Fatalf("record %d of %d on %s: %v", i+1, n, subject, err)
		}
		out = append(out, m.Data())
	}
	return out
}

// Issue 14, points 2, 3 and 7: a message published straight onto the jobs
// subject is held to what enqueue allows. A reply_to aimed at another
// batch's results, at KV buckets or at the JetStream API, a timeout above
// the ceiling, and a body naming another batch than its subject, each end
// in a failed result (reason invalid) on the subject's batch and a dead
// letter, with nothing sent; a reply_to under the configured prefixes gets
// its copy, and data written as JSON reaches the target byte for byte.
func TestDirectlyPublishedJobsHeldToTheBoundary(t *testing.T) {
	ns := natstest.RunServer(t)
	rec := &bodyRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	startWorkers(t, ns, pipelineOpts{Policy: job.Policy{ReplyPrefixes: []string{"replies"}}})
	nc, js := connect(t, ns)
	defer nc.Close()
	copies, err := nc.SubscribeSync("replies.>")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := nc.SubscribeSync(names.ResultSubject("teamB"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	msg := func(id, batch, extra string) string {
		return `{"id":"` + id + `","batch":"` + batch + `","method":"POST","url":"` + srv.URL + `/x","enqueued_at":"` + now + `"` + extra + `}`
	}
	invalid := []string{
		msg("to-results", "teamA", `,"reply_to":"jetpost.results.teamB"`),
		msg("to-dlq", "teamA", `,"reply_to":"jetpost.dlq.teamB"`),
		msg("to-kv", "teamA", `,"reply_to":"$KV.JETPOST_ATTEMPTS.x"`),
		msg("to-api", "teamA", `,"reply_to":"$JS.API.STREAM.PURGE.JETPOST_JOBS"`),
		msg("long", "teamA", `,"timeout":"1h"`),
		msg("huge", "teamA", `,"timeout":"1000000h"`),
		msg("other-batch", "teamB", ""),
	}
	const data = `{"sig": "<&>",  "n" : 1.50}`
	ctx := context.Background()
	for _, m := range append(invalid, msg("good", "teamA", `,"reply_to":"replies.teamA","json":`+data)) {
		if _, err := js.Publish(ctx, names.JobSubject("teamA"), []byte(m)); err != nil {
			t.Fatal(err)
		}
	}

	var invalidSeen int
	for _, b := range nextRecords(t, js, names.ResultsStream(), names.ResultSubject("teamA"), len(invalid)+1) {
		r, err := job.DecodeResult(b)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.OK:
			if r.Batch != "teamA" || r.ID != "good" {
				t.Errorf("ok result %+v", r)
			}
		case r.Reason == job.ReasonInvalid && r.Batch == "teamA":
			invalidSeen++
		default:
			t.Errorf("unexpected result %+v", r)
		}
	}
	if invalidSeen != len(invalid) {
		t.Errorf("%d invalid results, want %d", invalidSeen, len(invalid))
	}
	nextRecords(t, js, names.DLQStream(), names.DLQSubject("teamA"), len(invalid))
	if got := rec.sent(); len(got) != 1 || got[0] != data {
		t.Errorf("target got %q, want one request with body %q", got, data)
	}
	c, err := copies.NextMsg(60 * time.Second)
	if err != nil || c.Subject != "replies.teamA" || !strings.Contains(string(c.Data), `"id":"good"`) {
		t.Errorf("reply_to copy: %v %v", c, err)
	}
	if n, _, _ := forged.Pending(); n != 0 || storedResults(t, ns, "teamB") != 0 {
		t.Errorf("%d messages reached another batch's results subject", n)
	}
}

// Issue 14, point 7: enqueued_at in the future made a job never expire. The
// worker counts a job's age from when the stream stored it at the latest.
func TestFutureEnqueuedAtStillExpires(t *testing.T) {
	ns := natstest.RunServer(t)
	rec := &bodyRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	// Every job is older than a nanosecond by the time a worker holds it.
	startWorkers(t, ns, pipelineOpts{MaxJobAge: time.Nanosecond})
	nc, js := connect(t, ns)
	defer nc.Close()
	ctx := context.Background()
	for id, extra := range map[string]string{"future": `,"enqueued_at":"2100-01-01T00:00:00Z"`, "none": ""} {
		m := `{"id":"` + id + `","batch":"b","method":"GET","url":"` + srv.URL + `/"` + extra + `}`
		if _, err := js.Publish(ctx, names.JobSubject("b"), []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range nextRecords(t, js, names.ResultsStream(), names.ResultSubject("b"), 2) {
		r, err := job.DecodeResult(b)
		if err != nil {
			t.Fatal(err)
		}
		if r.Reason != job.ReasonExpired {
			t.Errorf("job %s: %+v, want expired", r.ID, r)
		}
	}
	if got := rec.sent(); len(got) != 0 {
		t.Errorf("%d requests sent for expired jobs", len(got))
	}
}
