package job

import (
	"strings"
	"testing"
	"time"
)

// A message published by hand gets enqueue's defaults and normalisation,
// its batch from the subject, and the id enqueue derives for the same
// entry (issue 16, point 1).
func TestDecodeMessageAppliesEnqueueRules(t *testing.T) {
	const line = `{"url":"https://api.example.com/items/1","method":"post","headers":{"Authorization":"Bearer s3cret"},"timeout":2.5}`
	j, err := DecodeMessage([]byte(line), "b1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Method != "POST" || j.Batch != "b1" || j.Timeout != Duration(2500*time.Millisecond) || !j.EnqueuedAt.IsZero() {
		t.Errorf("decoded %+v", j)
	}
	fromFile, err := NewDecoder(strings.NewReader(line+"\n"), "f.jsonl").Next()
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != fromFile.ID || !strings.HasPrefix(j.ID, "h-") {
		t.Errorf("derived id %q, enqueue derives %q", j.ID, fromFile.ID)
	}
	get, err := DecodeMessage([]byte(`{"id":"1","url":"https://api.example.com/"}`), "b1", nil)
	if err != nil || get.Method != "GET" {
		t.Errorf("no method: %+v, %v", get, err)
	}
}

// What enqueue publishes decodes to the job it encoded, body bytes and
// wire-only fields included; a re-driven callback message keeps no method.
func TestDecodeMessageRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 5, 19, 0, 0, 0, time.UTC)
	j := &Job{ID: "a/1", Batch: "b", Method: "PUT", URL: "https://x.example.com/p", Data: []byte(`{"k" : "<v>"}`),
		ReplyTo: "replies.x", Timeout: Duration(time.Second), EnqueuedAt: at, Redrive: 2, Rate: 5, Source: "f.jsonl:3"}
	for _, want := range []*Job{j, j.CallbackMessage(&Result{ID: "a/1", Batch: "b", OK: true, Status: 200})} {
		if want.Kind == KindCallback {
			want.Callback = "https://cb.example.com/"
		}
		msg, err := Encode(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMessage(msg, "b", nil)
		if err != nil {
			t.Fatalf("%s: %v", msg, err)
		}
		again, _ := Encode(got)
		if string(again) != string(msg) {
			t.Errorf("decoded and encoded again:\n%s\nwant\n%s", again, msg)
		}
	}
}

// A message is refused for what a file entry is refused for, and for a
// batch other than its subject's.
func TestDecodeMessageRefuses(t *testing.T) {
	for _, c := range []struct{ msg, batch, want string }{
		{`{"url":"https://x.example.com/","batch":"other"}`, "b", `names batch "other" but was published for batch "b"`},
		{`{"url":"https://x.example.com/","heders":{}}`, "b", `"heders" (did you mean "headers"?)`},
		{`{"url":"https://x.example.com/","method":7}`, "b", "method: must be a string, got number"},
		{`{"url":"x.example.com/"}`, "b", "url"},
		{`{"id":"` + strings.Repeat("i", MaxIDLen+1) + `","url":"https://x.example.com/"}`, "b", "limit"},
		{"{\"url\":\"https://x.example.com/\xff\"}", "b", "invalid UTF-8"},
		{`[{"url":"https://x.example.com/"}]`, "b", "expected a JSON object, got array"},
		{`{"url":"https://x.example.com/"} {}`, "b", "unexpected data"},
		{`{"url":"https://x.example.com/","enqueued_at":"yesterday"}`, "b", "decoding job"},
		{`{"url":"https://x.example.com/"}`, "a.b", "not a valid batch id"},
	} {
		_, err := DecodeMessage([]byte(c.msg), c.batch, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s on batch %q: %v, want an error with %q", c.msg, c.batch, err, c.want)
		}
	}
}

// The derived id of a message ignores the wire-only fields, as the file
// has none: enqueue's message and a hand-written one of the same entry
// are one job.
func TestDecodeMessageDerivedIDIgnoresWireFields(t *testing.T) {
	a, err := DecodeMessage([]byte(`{"url":"https://x.example.com/"}`), "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := DecodeMessage([]byte(`{"url":"https://x.example.com/","batch":"b","enqueued_at":"2026-01-02T03:04:05Z","source":"s:1"}`), "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID {
		t.Errorf("ids %q and %q", a.ID, b.ID)
	}
}

// BenchmarkDecodeMessage is the worker's cost per delivered job, beside
// the plain decode it replaced (BenchmarkDecodeWire).
func BenchmarkDecodeMessage(b *testing.B) {
	msg := benchMessage(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeMessage(msg, "batch-1", nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeWire(b *testing.B) {
	msg := benchMessage(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func benchMessage(b *testing.B) []byte {
	msg, err := Encode(&Job{ID: "job-000123", Batch: "batch-1", Method: "POST", URL: "https://api.example.com/v1/items/123",
		Headers: map[string]string{"Content-Type": "application/json", "X-Request-Source": "bench"}, Data: []byte(`{"n":123,"name":"item 123"}`),
		EnqueuedAt: time.Now().UTC(), Source: "jobs.jsonl:124"})
	if err != nil {
		b.Fatal(err)
	}
	return msg
}
