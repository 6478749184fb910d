// Package logging builds the zerolog logger both commands use: JSON for
// machines, console output for people, chosen by JETPOST_LOG_FORMAT or by
// whether the output is a terminal. The console format is coloured only on
// a terminal and without NO_COLOR (https://no-color.org), so a log file
// never holds escape codes.
package logging

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/jetpost/jetpost/internal/termsafe"
)

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("json", "console", "auto").
func New(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("log level %q: %w", level, err)
	}
	// Log lines carry ids, URLs and errors from jobs and servers; whoever
	// reads them on a terminal must see those escaped, not acted on.
	var out io.Writer = safeJSON{w}
	if format == "console" || (format == "auto" && IsTerminal(w)) {
		// The console writer quotes string fields itself, not the message
		// or values of other types.
		plain := func(i any) string { return termsafe.String(fmt.Sprintf("%s", i)) }
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, FormatMessage: plain, FormatFieldValue: plain,
			NoColor: !Colour(IsTerminal(w), os.LookupEnv)}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

// safeJSON escapes in each JSON log line what encoding it as JSON leaves
// as it is (C1 controls, bidirectional overrides); zerolog writes one line
// per Write.
type safeJSON struct{ w io.Writer }

func (s safeJSON) Write(p []byte) (int, error) {
	line, nl := bytes.CutSuffix(p, []byte("\n"))
	safe := termsafe.JSON(line)
	if nl && len(safe) != len(line) {
		safe = append(safe, '\n')
	} else if nl {
		safe = p
	}
	if _, err := s.w.Write(safe); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Colour reports whether console output may be coloured: on a terminal,
// unless NO_COLOR is set to anything but "".
func Colour(terminal bool, lookup func(string) (string, bool)) bool {
	noColor, _ := lookup("NO_COLOR")
	return terminal && noColor == ""
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
