package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
)

// Log lines in either format show text from jobs and servers escaped: the
// JSON one still decodes to the same values.
func TestLogLinesAreTerminalSafe(t *testing.T) {
	const hostile = "id\u009b2J\u202e\x1b]0;x\x07"
	for _, format := range []string{"json", "console"} {
		var buf bytes.Buffer
		log, err := New(&buf, "info", format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info().Str("job", hostile).Strs("ids", []string{hostile}).Msg("sent " + hostile)
		out := buf.String()
		if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
			t.Errorf("%s: not one line: %q", format, out)
		}
		if i := strings.IndexFunc(strings.TrimSuffix(out, "\n"), func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }); i >= 0 {
			t.Errorf("%s log line has %q raw: %q", format, out[i:], out)
		}
		if format == "json" {
			var v struct {
				Job string `json:"job"`
				Msg string `json:"message"`
			}
			if err := json.Unmarshal(buf.Bytes(), &v); err != nil || v.Job != hostile || v.Msg != "sent "+hostile {
				t.Errorf("json log line decodes to %+v (%v)", v, err)
			}
		}
	}
}

// Written to anything but a terminal (a file, a pipe), the console format
// has no colour codes; on a terminal NO_COLOR turns them off.
func TestConsoleToAFileIsPlain(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "info", "console")
	if err != nil {
		t.Fatal(err)
	}
	log.Warn().Str("host", "api.example.com").Err(errors.New("boom")).Msg("breaker open")
	if strings.ContainsRune(buf.String(), '\x1b') || !strings.Contains(buf.String(), "WRN breaker open") {
		t.Errorf("console log to a buffer: %q", buf.String())
	}
	env := func(v string, set bool) func(string) (string, bool) {
		return func(string) (string, bool) { return v, set }
	}
	for _, tc := range []struct {
		terminal bool
		lookup   func(string) (string, bool)
		want     bool
	}{
		{true, env("", false), true}, {true, env("", true), true}, {true, env("1", true), false}, {false, env("", false), false},
	} {
		if got := Colour(tc.terminal, tc.lookup); got != tc.want {
			v, set := tc.lookup("NO_COLOR")
			t.Errorf("Colour(terminal %v, NO_COLOR %q set %v) = %v", tc.terminal, v, set, got)
		}
	}
}
