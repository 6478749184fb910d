package main

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
)

// hostileBody answers with what a malicious or broken server may send: a
// window title, a screen clear, a C1 CSI (as UTF-8) and a bidi override.
const hostileBody = "\x1b]0;pwned\x07\x1b[2J\u009b31mred\u202egpj.exe"

// Ids with a C1 control or a bidi override pass validation (they are not
// ASCII controls); every human-readable output, and every JSON one, shows
// them and the response body as visible escapes, never as characters a
// terminal acts on.
func TestTerminalOutputIsEscaped(t *testing.T) {
	leakcheck.AtEnd(t)
	setEnv(t)
	ns := natstest.RunServer(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(hostileBody))
	}))
	defer srv.Close()
	startWorkers(t, ns, 1)
	url := ns.ClientURL()
	file := write(t, "jobs.jsonl", `{"id":"inv\u202ecod.exe","url":"`+srv.URL+`/a"}`+"\n"+
		`{"id":"x\u009b2Jy","url":"`+srv.URL+`/b"}`+"\n")
	out := filepath.Join(t.TempDir(), "out.jsonl")

	r := runCmd(t, nil, "--nats", url, "--batch", "term", "--wait", "--json", "--out", out, file)
	if r.code() != exitFailedJobs {
		t.Fatalf("exit %d (%v), want %d: both jobs fail with 400\n%s", r.code(), r.err, exitFailedJobs, r.stderr)
	}
	outputs := map[string]string{"run stdout": r.stdout, "run stderr": r.stderr}
	waitUntil(t, func() bool { return len(deadLetters(t, ns, "term")) == 2 })
	for _, args := range [][]string{
		{"results", "term"}, {"dlq", "term"}, {"dlq", "term", "--json"},
		{"show", out}, {"status", "term"}, {"status", "--json"},
	} {
		c := runCmd(t, nil, append(args, "--nats", url)...)
		if args[0] == "show" {
			c = runCmd(t, nil, args...)
		}
		if c.err != nil {
			t.Fatalf("%v: %v\n%s", args, c.err, c.stderr)
		}
		outputs[strings.Join(args, " ")+" stdout"], outputs[strings.Join(args, " ")+" stderr"] = c.stdout, c.stderr
	}
	for name, text := range outputs {
		if i := strings.IndexFunc(text, terminalControl); i >= 0 || !utf8.ValidString(text) {
			t.Errorf("%s reaches the terminal raw (at %d): %q", name, i, text)
		}
	}
	if table := outputs["dlq term stdout"]; !strings.Contains(table, `inv\u202ecod.exe`) || !strings.Contains(table, `x\u009b2Jy`) {
		t.Errorf("dlq table does not show the ids escaped:\n%s", table)
	}
	if shown := outputs["show "+out+" stdout"]; !strings.Contains(shown, `inv\u202ecod.exe`) {
		t.Errorf("show does not show the id escaped:\n%s", shown)
	}
	if res := outputs["results term stdout"]; !strings.Contains(res, `\u0007\u001b[2J\u009b31mred\u202egpj.exe`) {
		t.Errorf("results do not carry the body as JSON escapes:\n%s", res)
	}
}

// A record file may come from anywhere: show escapes every field it prints.
func TestShowEscapesEveryField(t *testing.T) {
	line := `{"id":"a\u001b[1m","batch":"b","source":"f\u202e:1","method":"GET\u0085","url":"http://h/\u009b?user[password]=pw",` +
		`"ok":false,"status":400,"attempts":1,"reason":"x\u001b[2J","error":"e\u200f",` +
		`"callback":{"ok":false,"error":"cb\u001b]0;t\u0007"}}` + "\n"
	r := runCmd(t, []byte(line), "show", "-")
	if r.err != nil {
		t.Fatal(r.err, r.stderr)
	}
	if i := strings.IndexFunc(r.stdout, terminalControl); i >= 0 {
		t.Errorf("show prints %q raw:\n%q", r.stdout[i:], r.stdout)
	}
	for _, want := range []string{`a\x1b[1m`, `f\u202e:1`, `x\x1b[2J`, `cb\x1b]0;t\x07`, `e\u200f`, `user[password]=REDACTED`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show does not print %s:\n%s", want, r.stdout)
		}
	}
}

// terminalControl reports the characters a terminal acts on or that do not
// show as themselves; a table's line breaks are its own.
func terminalControl(r rune) bool {
	return r != '\n' && (r == utf8.RuneError || !unicode.IsPrint(r) && r != ' ')
}

// A rate too slow for a limit to keep is a usage error naming the minimum,
// not a batch published without a limit; nothing is published.
func TestRunRefusesATinyRate(t *testing.T) {
	setEnv(t)
	file := write(t, "jobs.jsonl", `{"id":"1","url":"http://127.0.0.1:1/"}`+"\n")
	for _, rate := range []string{"1e-11/s", "0.5/d"} {
		r := runCmd(t, nil, "--nats", "nats://127.0.0.1:1", "--rate", rate, file)
		if r.code() != exitUsage || !strings.Contains(r.stderr+r.errText(), "less than 1 per day") {
			t.Errorf("--rate %s: exit %d, stderr %q, err %v; want a usage error naming the minimum", rate, r.code(), r.stderr, r.err)
		}
	}
	if r := runCmd(t, nil, "--help"); !strings.Contains(r.stderr, "N/d") {
		t.Errorf("--help does not name the N/d unit:\n%s", r.stderr)
	}
}

func (r result) errText() string {
	if r.err == nil {
		return ""
	}
	return r.err.Error()
}
