package logging

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

var colour = regexp.MustCompile("\x1b\\[[0-9;]*m")

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
		// The console writer's own colours are its business.
		out := colour.ReplaceAllString(buf.String(), "")
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
