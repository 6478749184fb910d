package job

import (
	"strings"
	"testing"
	"time"
)

func TestPolicyReplyTo(t *testing.T) {
	open := Policy{ReplyPrefixes: []string{"replies", "acme.out"}, SubjectPrefix: "jetpost"}
	all := Policy{ReplyPrefixes: []string{">"}, SubjectPrefix: "jetpost"}
	tests := []struct {
		name    string
		p       Policy
		subject string
		want    string // "" for allowed
	}{
		{"none configured", Policy{}, "replies.a", "allows no reply_to"},
		{"under a prefix", open, "replies.teamA", ""},
		{"the prefix itself", open, "replies", ""},
		{"deeper", open, "acme.out.x.y", ""},
		{"token boundary", open, "repliesX.a", "not under any"},
		{"other subject", open, "orders.new", "not under any"},
		{"another batch's results", all, "jetpost.results.teamB", "this deployment's"},
		{"another batch's dead letters", all, "jetpost.dlq.teamB", "this deployment's"},
		{"the jobs subject", all, "jetpost.jobs.teamB", "this deployment's"},
		{"KV attempt counts", all, "$KV.JETPOST_ATTEMPTS.x", "$ are the NATS server's"},
		{"JetStream API", all, "$JS.API.STREAM.PURGE.JETPOST_JOBS", "$ are the NATS server's"},
		{"system account", all, "$SYS.REQ.SERVER.PING", "$ are the NATS server's"},
		{"reply inbox", all, "_INBOX.abc.def", "_INBOX"},
		{"anything else with >", all, "orders.new", ""},
		{"other prefix's subjects", Policy{ReplyPrefixes: []string{">"}, SubjectPrefix: "tenant1"}, "tenant1.results.b", "this deployment's"},
		{"default deployment prefix", Policy{ReplyPrefixes: []string{">"}}, "jetpost.results.b", "this deployment's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Check(&Job{ReplyTo: tt.subject})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Check = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Check = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestPolicyTimeoutCeiling(t *testing.T) {
	for _, tt := range []struct {
		p       Policy
		timeout time.Duration
		ok      bool
	}{
		{Policy{}, DefaultMaxTimeout, true},
		{Policy{}, DefaultMaxTimeout + time.Millisecond, false},
		{Policy{MaxTimeout: time.Minute}, time.Minute, true},
		{Policy{MaxTimeout: time.Minute}, 61 * time.Second, false},
		{Policy{MaxTimeout: time.Hour}, 30 * time.Minute, true},
	} {
		err := tt.p.Check(&Job{Timeout: Duration(tt.timeout)})
		if (err == nil) != tt.ok {
			t.Errorf("ceiling %v, timeout %v: Check = %v", tt.p.MaxTimeout, tt.timeout, err)
		}
	}
}

// Issue 14, point 3: the string form had no upper bound ("1000000h" was
// accepted) while the number form was capped; both are bounded alike now,
// at parse time, and by the deployment's ceiling after.
func TestTimeoutStringBounded(t *testing.T) {
	in := `{"url":"http://a/","timeout":"1000000h"}` + "\n" +
		`{"url":"http://a/","timeout":"25h"}` + "\n" +
		`{"url":"http://a/","timeout":90000}` + "\n" +
		`{"url":"http://a/","timeout":"24h"}`
	jobs, errs := decodeString(t, "f", in)
	if len(jobs) != 1 || len(errs) != 3 {
		t.Fatalf("jobs %d, errors %v", len(jobs), errs)
	}
	for _, e := range errs {
		if !strings.Contains(e.Error(), "out of range") {
			t.Errorf("%v: want out of range", e)
		}
	}
	if err := (Policy{}).Check(jobs[0]); err == nil || !strings.Contains(err.Error(), "JETPOST_MAX_TIMEOUT") {
		t.Errorf("24h against the default ceiling: %v", err)
	}
	// The worker decodes the wire form by the same rules.
	if _, err := Decode([]byte(`{"id":"a","batch":"b","method":"GET","url":"http://a/","timeout":"1000000h"}`)); err == nil {
		t.Error("Decode accepted a timeout of 1000000h")
	}
}

func TestParseReplyPrefixes(t *testing.T) {
	got, err := ParseReplyPrefixes(" replies.> , acme.out ,,>", "jetpost")
	if err != nil || strings.Join(got, "|") != "replies|acme.out|>" {
		t.Fatalf("= %q, %v", got, err)
	}
	for _, bad := range []string{"$KV.X", "_INBOX", "jetpost", "jetpost.results.>", "a.*", "a b", "a..b"} {
		if _, err := ParseReplyPrefixes(bad, "jetpost"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got, err := ParseReplyPrefixes("", "jetpost"); err != nil || len(got) != 0 {
		t.Errorf("empty = %q, %v", got, err)
	}
}

// Issue 14, point 7: a JSON body was compacted and HTML-escaped on
// the wire ("<" became "\u003c"), so an API that signs or compares the
// body byte for byte saw another body. The worker sends what the file says.
func TestDataSentByteForByte(t *testing.T) {
	const lineData = `{"b": [1, 2.50, "<&>"],  "a" : "\u00e9\/"}`
	const arrayData = "{\n    \"k\": \"v <x>\"\n  }"
	in := "[\n" + `  {"url":"http://a/","json":` + lineData + "},\n" +
		`  {"url":"http://a/","json":` + arrayData + "}\n]"
	jobs, errs := decodeString(t, "f", in)
	if len(errs) != 0 || len(jobs) != 2 {
		t.Fatalf("jobs %d errs %v", len(jobs), errs)
	}
	for i, want := range []string{lineData, arrayData} {
		j := jobs[i]
		j.Batch, j.EnqueuedAt = "b", time.Unix(1764240000, 0).UTC()
		wire, err := Encode(j)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(wire), `"json":`+want) {
			t.Errorf("wire form %s does not carry the json as written", wire)
		}
		got, err := Decode(wire)
		if err != nil {
			t.Fatal(err)
		}
		if body, ct := got.Body(); string(body) != want || ct != "application/json" {
			t.Errorf("worker sends %q (%s), want %q", body, ct, want)
		}
	}
}

func TestWithRawField(t *testing.T) {
	if got := string(WithRawField([]byte(`{}`), "d", []byte(` [1, "<"] `))); got != `{"d": [1, "<"] }` {
		t.Errorf("empty object: %s", got)
	}
	if got := string(WithRawField([]byte(`{"a":1}`), "d", []byte(`"x"`))); got != `{"a":1,"d":"x"}` {
		t.Errorf("= %s", got)
	}
}
