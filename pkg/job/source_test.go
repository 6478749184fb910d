package job

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSourceOf(t *testing.T) {
	long := strings.Repeat("dir/", 200) + "requests.jsonl"
	tests := []struct {
		name, file string
		line       int
		want       string
	}{
		{"file", "in/requests.jsonl", 12, "in/requests.jsonl:12"},
		{"standard input", "-", 3, "-:3"},
		{"control characters", "a\x1b[2Jb\n.jsonl", 1, "a?[2Jb?.jsonl:1"},
		{"invalid UTF-8", "a\xffb", 7, "a?b:7"},
		{"too long: the start goes", long, 99, "…" + long[len(long)-(MaxSourceLen-len(":99")-len("…")):] + ":99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SourceOf(tt.file, tt.line)
			if got != tt.want {
				t.Errorf("SourceOf(%q, %d) = %q, want %q", tt.file, tt.line, got, tt.want)
			}
			if len(got) > MaxSourceLen || !utf8.ValidString(got) {
				t.Errorf("%q: %d bytes or invalid UTF-8", got, len(got))
			}
			// Whatever the file's name, the job it names stays valid.
			j := &Job{ID: "a", Method: "GET", URL: "https://example.com/", Source: got}
			if err := j.Validate(); err != nil {
				t.Errorf("a job with this source is invalid: %v", err)
			}
		})
	}
	// A multi-byte character cut in the middle is dropped, not split.
	got := SourceOf(strings.Repeat("é", MaxSourceLen), 1)
	if !utf8.ValidString(got) || len(got) > MaxSourceLen {
		t.Errorf("cut inside a character: %q", got)
	}
}

// Source comes off the wire untrusted: only display text within bounds.
func TestValidateSourceAndKind(t *testing.T) {
	ok := func() *Job {
		return &Job{ID: "a", Batch: "b", Method: "GET", URL: "https://example.com/", Callback: "https://hooks.example.com/x"}
	}
	tests := []struct {
		name   string
		change func(j *Job)
		valid  bool
	}{
		{"plain", func(*Job) {}, true},
		{"source", func(j *Job) { j.Source = "f.jsonl:3" }, true},
		{"source too long", func(j *Job) { j.Source = strings.Repeat("x", MaxSourceLen+1) }, false},
		{"source with an escape", func(j *Job) { j.Source = "f\x1b[31m:1" }, false},
		{"source not UTF-8", func(j *Job) { j.Source = "f\xff:1" }, false},
		{"callback message", func(j *Job) { *j = *j.CallbackMessage(&Result{ID: "a", OK: true}) }, true},
		// A callback message with a request would be sent by a worker that
		// does not know kinds: it has none.
		{"callback message with a url", func(j *Job) { j.Kind, j.Result = KindCallback, &Result{ID: "a", OK: true} }, false},
		{"callback message without its result", func(j *Job) { *j = *j.CallbackMessage(nil) }, false},
		{"callback message without a callback", func(j *Job) { *j = *j.CallbackMessage(&Result{}); j.Callback = "" }, false},
		{"a result on a request", func(j *Job) { j.Result = &Result{} }, false},
		{"unknown kind", func(j *Job) { j.Kind = "webhook" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := ok()
			tt.change(j)
			if err := j.Validate(); (err == nil) != tt.valid {
				t.Errorf("Validate() = %v, want valid %v", err, tt.valid)
			}
		})
	}
}

// A callback's key is not its job's (an API enforcing keys would take the
// callback for a replay), is the same however often that callback is
// re-sent, and is new for each run of the job.
func TestCallbackKey(t *testing.T) {
	j := &Job{ID: "order-17", Batch: "b", Method: "POST", URL: "https://api.example.com/orders",
		Headers: map[string]string{"Authorization": "Bearer s3cret"}, Data: []byte(`{"a":1}`),
		Callback: "https://hooks.example.com/x", Source: "f.jsonl:4"}
	if k := j.CallbackKey(); k == j.ID || k != "order-17:callback" {
		t.Errorf("CallbackKey() = %q", k)
	}
	m := j.CallbackMessage(&Result{ID: j.ID, Batch: "b", OK: true})
	if m.CallbackKey() != j.CallbackKey() {
		t.Errorf("the callback message's key %q differs from the first POST's %q", m.CallbackKey(), j.CallbackKey())
	}
	if m.Headers != nil || m.Data != nil || m.Kind != KindCallback || m.Source != j.Source || m.Callback != j.Callback {
		t.Errorf("callback message %+v: want no headers or body, the kind, source and callback", m)
	}
	if err := m.Validate(); err != nil {
		t.Errorf("callback message invalid: %v", err)
	}
	j.Redrive = 2
	if k := j.CallbackKey(); k != "order-17:callback:r2" {
		t.Errorf("a re-driven job's callback key = %q, want one of its own run", k)
	}
}

// What naming the request costs each result: redacting its URL (a parse),
// and the record's extra bytes (BenchmarkEncodeResult without them).
func BenchmarkResultRequestFields(b *testing.B) {
	j := benchJob()
	r := &Result{
		ID: "h-b1e84d21dec243147d29-2", Batch: "2025-11-27_orders", OK: true, Status: 201, Attempts: 2,
		Body:       `{"id":"ord_8812","status":"accepted","links":{"self":"https://api.example.com/v2/orders/ord_8812"}}`,
		DurationMS: 184, Worker: "worker-3f9a", Callback: &CallbackResult{OK: true, Status: 204},
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Method, r.URL, r.Source = j.Method, RedactURL(j.URL), SourceOf("in/2025-11-27-orders.jsonl", 48213)
		out, err := EncodeResult(r)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(out)))
	}
}
