package job

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"
)

type decoded struct {
	jobs []*Job
	errs []*LineError
}

// decodeFuzz is decodeAll for fuzzing: failures are reported, not fatal in
// a helper, and the number of calls is bounded by the input so that a
// decoder that stops making progress shows up.
func decodeFuzz(t *testing.T, r io.Reader, size int) decoded {
	t.Helper()
	var out decoded
	d := NewDecoder(r, "fuzz")
	for range size + 4 {
		j, err := d.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			le, ok := err.(*LineError)
			if !ok {
				t.Fatalf("error %T %v is not a *LineError", err, err)
			}
			out.errs = append(out.errs, le)
			continue
		}
		out.jobs = append(out.jobs, j)
	}
	t.Fatalf("no io.EOF after %d calls for %d bytes", size+4, size)
	return out
}

func FuzzDecoder(f *testing.F) {
	for _, s := range []string{
		`{"url":"http://a/"}`,
		`{"id":"x","method":"post","url":"https://a.example/p?q=1","headers":{"A":"b"},"data":{"k":[1,2.0]},"callback":"http://cb/","reply_to":"r.s","timeout":"5s"}` + "\n" + `{"url":"http://a/"}` + "\r\n\r\n" + `{"url":"http://a/"}`,
		"\uFEFF[\n  {\"url\": \"http://a/\"},\n  {\"url\": 5},\n  {\"url\":\n \"http://b/\", \"data\": \"x]}\\\"{\"}\n]\n",
		`[{"url":"http://a/"} {"url":"http://b/"}]`,
		`{"id":"h-b1e84d21dec243147d29-2","url":"http://a/"}` + "\n" + `{"url":"http://a/"}` + "\n" + `{"url":"http://a/"}`,
		"{\"url\":\"http://a/\xff\"}\n\x00\n[1,2]\nnull\n\"s\"\n{\"url\":\"http://a/\"} x",
		`{"url":"http://a/","d\u0061ta":1,"data":{"x":"}"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got := decodeFuzz(t, bytes.NewReader(in), len(in))

		lines := bytes.Count(in, []byte{'\n'}) + 1
		for _, e := range got.errs {
			if e.Line < 1 || e.Line > lines {
				t.Errorf("error at line %d of a %d-line input: %v", e.Line, lines, e)
			}
			if e.File != "fuzz" || e.Err == nil {
				t.Errorf("malformed LineError %#v", e)
			}
		}
		seen := make(map[string]bool)
		for _, j := range got.jobs {
			if err := j.Validate(); err != nil {
				t.Errorf("returned job %+v does not validate: %v", j, err)
			}
			if j.Batch != "" || !j.EnqueuedAt.IsZero() {
				t.Errorf("decoder set Batch or EnqueuedAt: %+v", j)
			}
			if seen[j.ID] {
				t.Errorf("id %q handed out twice", j.ID)
			}
			seen[j.ID] = true
		}

		// Buffer boundaries must not matter.
		slow := decodeFuzz(t, iotest.OneByteReader(bytes.NewReader(in)), len(in))
		if a, b := fmt.Sprint(idList(got.jobs), got.errs), fmt.Sprint(idList(slow.jobs), slow.errs); a != b {
			t.Errorf("one-byte reads differ:\n%s\n%s", b, a)
		}

		// A single JSON Lines entry: data must be the bytes encoding/json
		// finds for "data".
		if len(got.jobs) == 1 && bytes.IndexByte(in, '\n') < 0 && bytes.IndexByte(bytes.TrimLeft(in, "\uFEFF \t\r"), '[') != 0 {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(bytes.TrimPrefix(in, []byte("\uFEFF")), &m); err != nil {
				t.Fatalf("accepted %q, encoding/json says %v", in, err)
			}
			want := m["data"]
			if string(want) == "null" {
				want = nil
			}
			if !bytes.Equal(got.jobs[0].Data, want) {
				t.Errorf("Data = %q, want %q", got.jobs[0].Data, want)
			}
		}
	})
}

func FuzzResultRoundTrip(f *testing.F) {
	f.Add("h-b1e84d21dec243147d29", "batch-1", true, 200, 1, "", "", `{"ok":true}`, false, int64(120), "w1", int64(1764240000123456789), int16(0), false, false, 0, "")
	f.Add("x", "b", false, 503, 5, "503 Service Unavailable", string(ReasonExhausted), "busy", true, int64(30000), "w2", int64(-1), int16(-330), true, false, 0, "dial tcp: connection refused")
	f.Add("\xff", "b\x00", false, 0, 0, "<&>\u2028", string(ReasonInvalid), "\x80\x81", false, int64(-5), "", int64(0), int16(1439), true, true, 204, "")
	f.Fuzz(func(t *testing.T, id, batch string, ok bool, status, attempts int, errText, reason, body string, truncated bool,
		durationMS int64, worker string, unixNano int64, offsetMinutes int16, hasCallback, callbackOK bool, callbackStatus int, callbackErr string) {
		// RFC 3339 offsets are whole minutes within a day.
		zone := time.FixedZone("", int(offsetMinutes)%(24*60)*60)
		r := &Result{
			ID: id, Batch: batch, OK: ok, Status: status, Attempts: attempts, Error: errText, Reason: Reason(reason),
			Body: body, BodyTruncated: truncated, DurationMS: durationMS, Worker: worker,
			FinishedAt: time.Unix(0, unixNano).In(zone),
		}
		if hasCallback {
			r.Callback = &CallbackResult{OK: callbackOK, Status: callbackStatus, Error: callbackErr}
		}
		b, err := EncodeResult(r)
		if err != nil {
			t.Fatalf("EncodeResult: %v", err)
		}
		got, err := DecodeResult(b)
		if err != nil {
			t.Fatalf("DecodeResult of %s: %v", b, err)
		}
		if !got.FinishedAt.Equal(r.FinishedAt) {
			t.Errorf("FinishedAt %v, want %v", got.FinishedAt, r.FinishedAt)
		}
		_, gotOffset := got.FinishedAt.Zone()
		if _, wantOffset := r.FinishedAt.Zone(); gotOffset != wantOffset {
			t.Errorf("offset %d, want %d", gotOffset, wantOffset)
		}
		strs := []string{id, batch, errText, reason, body, worker, callbackErr}
		allValid := true
		for _, s := range strs {
			allValid = allValid && utf8.ValidString(s)
		}
		if allValid {
			// Times are compared above: the decoded location is another
			// *Location with the same offset.
			want, have := *r, *got
			want.FinishedAt, have.FinishedAt = time.Time{}, time.Time{}
			if !reflect.DeepEqual(want, have) {
				t.Errorf("round trip:\n got %#v %#v\nwant %#v %#v", have, have.Callback, want, want.Callback)
			}
			return
		}
		// Invalid UTF-8 cannot survive JSON; what comes back must at least be
		// stable from then on.
		b2, err := EncodeResult(got)
		if err != nil {
			t.Fatal(err)
		}
		got2, err := DecodeResult(b2)
		if err != nil {
			t.Fatal(err)
		}
		if b3, _ := EncodeResult(got2); !bytes.Equal(b2, b3) {
			t.Errorf("not stable after one round trip:\n%s\n%s", b2, b3)
		}
	})
}

// FuzzEnqueueDecodesInWorker: any job enqueue accepts (decoded from a file,
// allowed by the deployment's Policy, given its batch and time) reaches a
// worker as the same job: every field, the body's bytes, and the Policy's
// verdict. A difference would be a request nobody wrote.
func FuzzEnqueueDecodesInWorker(f *testing.F) {
	for _, s := range []string{
		`{"url":"http://a/","json":{"sig": "<&>",  "n" : 1.50}}`,
		`{"url":"http://a/?z=1&","data":{"sig": "<&>",  "n" : [1.50, "é"]},"params":{"a b":["/?#", 1e3]}}`,
		"[\n {\"id\":\"x\",\"method\":\"post\",\"url\":\"https://a.example/p?q=1\",\"headers\":{\"A\":\"b\"},\n  \"json\": [1,\n 2],\"callback\":\"http://cb/\",\"reply_to\":\"r.s\",\"timeout\":\"5s\"}\n]",
		`{"url":"http://a/","data":"line\u2028\u003c","timeout":2.5,"reply_to":"jetpost.results.b"}`,
		`{"url":"http://a/","data":"\ud800","timeout":"299.999999999s"}`,
	} {
		f.Add([]byte(s))
	}
	policy := Policy{ReplyPrefixes: []string{">"}}
	enqueuedAt := time.Date(2026, 12, 5, 10, 0, 0, 123456789, time.UTC)
	f.Fuzz(func(t *testing.T, in []byte) {
		got := decodeFuzz(t, bytes.NewReader(in), len(in))
		for _, j := range got.jobs {
			if policy.Check(j) != nil {
				continue // enqueue reports it; nothing is published
			}
			j.Batch, j.EnqueuedAt, j.Source, j.Rate = "b", enqueuedAt, SourceOf("fuzz", 1), 2.5
			wire, err := Encode(j)
			if err != nil {
				t.Fatalf("enqueue cannot encode accepted job %+v: %v", j, err)
			}
			w, err := DecodeMessage(wire, "b", nil)
			if err != nil {
				t.Fatalf("worker refuses %s: %v", wire, err)
			}
			if err := policy.Check(w); err != nil {
				t.Errorf("worker's policy refuses %s: %v", wire, err)
			}
			if !w.EnqueuedAt.Equal(j.EnqueuedAt) {
				t.Errorf("enqueued_at %v, want %v", w.EnqueuedAt, j.EnqueuedAt)
			}
			wb, wct := w.Body()
			jb, jct := j.Body()
			if !bytes.Equal(wb, jb) || wct != jct || w.RequestURL() != j.RequestURL() {
				t.Errorf("worker sends %s %q (%s), enqueue read %s %q (%s)", w.RequestURL(), wb, wct, j.RequestURL(), jb, jct)
			}
			want, have := *j, *w
			want.EnqueuedAt, have.EnqueuedAt = time.Time{}, time.Time{}
			if !reflect.DeepEqual(want, have) {
				t.Errorf("worker decodes\n %#v\nenqueue had\n %#v\nwire %s", have, want, wire)
			}
		}
	})
}
