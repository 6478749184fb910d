package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/schemas"
)

// wireSchemas compiles the schemas once for every test of the package.
var wireSchemas = sync.OnceValues(schemas.New)

// checkSchema fails the test if data, a record read from NATS or a file
// (where), does not match the schema named.
func checkSchema(t *testing.T, name string, data []byte, where string) {
	t.Helper()
	v, err := wireSchemas()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(name, data); err != nil {
		t.Errorf("%s: %s does not match the schema: %v", where, data, err)
	}
}

// records reads n messages of subject from stream, in order, failing the
// test if they do not come (a liveness guard) or do not match schema.
func records(t *testing.T, js jetstream.JetStream, stream, subject, schema string, n int) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for len(out) < n {
		msg, err := c.Next(jetstream.FetchMaxWait(2 * time.Minute))
		if err != nil {
			t.Fatalf("%d of %d records on %s: %v", len(out), n, subject, err)
		}
		checkSchema(t, schema, msg.Data(), subject)
		out = append(out, msg.Data())
	}
	return out
}

// stored is how many messages stream holds on subject.
func stored(t *testing.T, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// drained waits until the jobs stream is empty (work queue: every job
// acked) and the done bucket holds markers markers (each job's is stored
// before its ack is confirmed) — a liveness guard on real events.
func drained(t *testing.T, js jetstream.JetStream, markers uint64) {
	t.Helper()
	waitStream(t, js, "JETPOST_JOBS", func(n uint64) bool { return n == 0 })
	waitStream(t, js, "KV_JETPOST_DONE", func(n uint64) bool { return n >= markers })
}

// waitStream waits until ok holds for the number of messages in stream.
func waitStream(t *testing.T, js jetstream.JetStream, stream string, ok func(uint64) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s, err := js.Stream(context.Background(), stream)
		if err == nil {
			if info, err := s.Info(context.Background()); err == nil && ok(info.State.Msgs) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s not in the state awaited within 2 minutes", stream)
		}
		time.Sleep(20 * time.Millisecond) // polling a broker's state; no ordering depends on it
	}
}

func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Issue 16, point 1: messages published by hand, as a producer in another
// language or the nats CLI would, get enqueue's rules (GET by default, the
// subject's batch, an upper-cased method, a derived id); an invalid one
// gets a failed result on its batch's subject as well as a dead letter;
// Nats-Msg-Id de-duplicates within the window, the completion marker after
// it or without one; two copies in flight at once without one may both be
// sent, but still get one result. Every record matches its schema.
func TestHandPublishedMessages(t *testing.T) {
	ns := natstest.RunServer(t)
	url, count := echoServer(t)
	w := start(t, "worker", workerEnv(ns.ClientURL()))
	w.waitLine("consuming jobs")
	_, js := connect(t, ns.ClientURL())
	ctx := context.Background()
	pub := func(batch, data, msgID string) *jetstream.PubAck {
		t.Helper()
		var opts []jetstream.PublishOpt
		if msgID != "" {
			opts = append(opts, jetstream.WithMsgID(msgID))
		}
		ack, err := js.Publish(ctx, "jetpost.jobs."+batch, []byte(data), opts...)
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	pub("raw", `{"url":"`+url+`/plain"}`, "")
	pub("raw", `{"id":"lower","method":"post","url":"`+url+`/lower","data":"x"}`, "")
	pub("raw", `{"id":"elsewhere","batch":"other","url":"`+url+`/elsewhere"}`, "")
	pub("raw", `not json`, "")
	pub("raw", `{"id":"dup","url":"`+url+`/dup"}`, "dup")
	if ack := pub("raw", `{"id":"dup","url":"`+url+`/dup"}`, "dup"); !ack.Duplicate {
		t.Errorf("second publish with the same Nats-Msg-Id stored: %+v", ack)
	}
	if ack := pub("raw", `{"id":"dup","url":"`+url+`/dup-changed"}`, "dup"); !ack.Duplicate {
		t.Errorf("a changed request under the same Nats-Msg-Id within the window stored: %+v", ack)
	}
	pub("raw", `{"id":"twice","url":"`+url+`/twice"}`, "")
	pub("raw", `{"id":"twice","url":"`+url+`/twice"}`, "")
	pub("a.b", `{"id":"deep","url":"`+url+`/deep"}`, "")
	drained(t, js, 4)
	// Published again once they ran: another Nats-Msg-Id (as after the
	// dedup window) or none; the completion markers catch both.
	pub("raw", `{"id":"dup","url":"`+url+`/dup"}`, "dup-after-the-window")
	pub("raw", `{"url":"`+url+`/plain"}`, "")
	drained(t, js, 4)

	results := map[string]*job.Result{}
	var invalid []*job.Result
	for _, b := range records(t, js, "JETPOST_RESULTS", "jetpost.results.raw", schemas.Result, 6) {
		var r job.Result
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		if r.Reason == job.ReasonInvalid {
			invalid = append(invalid, &r)
			continue
		}
		results[r.ID] = &r
	}
	if n := stored(t, js, "JETPOST_RESULTS", "jetpost.results.raw"); n != 6 {
		t.Errorf("%d results stored, want 6: 4 jobs and 2 invalid messages (one per job, however often published)", n)
	}
	var derived string
	for id, r := range results {
		if strings.HasPrefix(id, "h-") && r.URL == url+"/plain" {
			derived = id
		}
	}
	if derived == "" || !results[derived].OK || results["lower"] == nil || results["lower"].Method != "POST" {
		t.Errorf("results %v: want an ok GET with a derived id and an ok POST", results)
	}
	if count("GET /plain") != 1 || count("POST /lower") != 1 || count("GET /dup") != 1 || count("GET /elsewhere") != 0 {
		t.Errorf("target saw GET /plain %d, POST /lower %d, GET /dup %d, GET /elsewhere %d; want 1, 1, 1, 0",
			count("GET /plain"), count("POST /lower"), count("GET /dup"), count("GET /elsewhere"))
	}
	// Both copies may be in flight before either's marker is stored.
	if n := count("GET /twice"); n < 1 || n > 2 {
		t.Errorf("published twice at once without Nats-Msg-Id: sent %d times, want 1 or 2 (as documented)", n)
	}
	if len(invalid) != 2 || invalid[0].ID != "" || invalid[1].ID != "" || !strings.Contains(invalid[0].Error+invalid[1].Error, `names batch "other"`) {
		t.Errorf("invalid results %+v", invalid)
	}
	for _, b := range records(t, js, "JETPOST_DLQ", "jetpost.dlq.raw", schemas.DeadLetter, 2) {
		if !strings.Contains(string(b), `"reason":"invalid"`) {
			t.Errorf("dead letter %s", b)
		}
	}
	if r := records(t, js, "JETPOST_RESULTS", "jetpost.results.invalid", schemas.Result, 1); !strings.Contains(string(r[0]), `"reason":"invalid"`) {
		t.Errorf("message on a subject with no valid batch: result %s", r[0])
	}
	if count("GET /deep") != 0 || count("GET /dup-changed") != 0 {
		t.Error("a refused or dropped message was sent")
	}
	if n := stored(t, js, "JETPOST_RESULTS", "jetpost.results.other"); n != 0 {
		t.Errorf("%d results on the batch the body named", n)
	}
}

// Every job message enqueue publishes, whatever fields its entry has,
// matches the job message schema, and the results the worker stores for
// them match the result schema.
func TestEnqueuedMessagesMatchSchema(t *testing.T) {
	ns := natstest.RunServer(t)
	url, _ := echoServer(t)
	file := filepath.Join(t.TempDir(), "jobs.jsonl")
	var lines []string
	for i, extra := range []string{
		``,
		`,"method":"delete"`,
		`,"id":"with-data","method":"POST","data":{"a":[1,2.50,"<x>"]},"headers":{"X-A":"b"}`,
		`,"id":"text","method":"PUT","data":"plain text","timeout":"2s"`,
		`,"id":"json","method":"POST","json":{"sig": "<&>",  "n" : 1.50},"params":{"q":"a b","p":[1,2]}`,
		`,"id":"cb","timeout":3,"callback":"` + url + `/hook","reply_to":"replies.e2e"`,
		`,"id":"patch","method":"PATCH"`,
	} {
		lines = append(lines, fmt.Sprintf(`{"url":"%s/e/%d"%s}`, url, i, extra))
	}
	writeFile(t, file, strings.Join(lines, "\n")+"\n")
	env := []string{"JETPOST_REPLY_PREFIXES=replies"}
	if code, _, stderr := runEnqueue(t, env, "--nats", ns.ClientURL(), "--batch", "schema", "--rate", "100/s", file); code != 0 {
		t.Fatalf("enqueue: exit %d: %s", code, stderr)
	}
	_, js := connect(t, ns.ClientURL())
	// A work-queue stream allows no ordered consumer: read it by sequence.
	s, err := js.Stream(context.Background(), "JETPOST_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil || info.State.Msgs != uint64(len(lines)) {
		t.Fatalf("jobs stream %+v, %v: want %d messages", info, err, len(lines))
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		checkSchema(t, schemas.JobMessage, m.Data, m.Subject)
	}

	w := start(t, "worker", workerEnv(ns.ClientURL(), env...))
	w.waitLine("consuming jobs")
	records(t, js, "JETPOST_RESULTS", "jetpost.results.schema", schemas.Result, len(lines))
}
