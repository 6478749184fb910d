// Package termsafe makes text that came from a job, a response or the
// broker safe to print on an operator's terminal.
//
// A terminal acts on what it is sent: ESC and the C1 controls start
// sequences that move the cursor, rewrite the screen, set the window title
// or, on some terminals, write files or the clipboard; a carriage return or
// a line break forges lines; bidirectional overrides (U+202E) and other
// invisible format characters make text read differently from what it is.
// Every such character is shown as a visible escape instead: \x1b, \r,
// \u202e, and a byte of invalid UTF-8 as \xff. Printable text, non-ASCII
// letters included, is left as it is. A backslash is not doubled, so that
// ordinary text reads as it was written: an escape shown is a display, never
// a way back to the original bytes (JSON output is that).
package termsafe

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// safe reports whether r may reach a terminal as it is: a printable
// character (letters, marks, numbers, punctuation, symbols) or ASCII space.
func safe(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= 0x20 && r < 0x7f
	}
	return r != utf8.RuneError && unicode.IsPrint(r)
}

// plainASCII reports whether s is printable ASCII only: the common case,
// which needs no copy.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// String returns s with every character a terminal would act on, or that
// would not show as itself, replaced by a visible escape; line breaks and
// tabs too, so the result is one line.
func String(s string) string {
	if plainASCII(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x`)
			b.WriteString(hex2(s[i]))
		case safe(r):
			b.WriteString(s[i : i+size])
		default:
			writeEscape(&b, r)
		}
		i += size
	}
	return b.String()
}

// Lines is String for text of several lines: each line is made safe, and
// the line breaks between them are kept.
func Lines(s string) string {
	parts := strings.Split(s, "\n")
	for i, p := range parts {
		parts[i] = String(p)
	}
	return strings.Join(parts, "\n")
}

// writeEscape writes r as Go would quote it: \t, \n, \r, \x1b for the
// other ASCII controls, \u202e or \U000e0001 beyond.
func writeEscape(b *strings.Builder, r rune) {
	switch {
	case r == '\t':
		b.WriteString(`\t`)
	case r == '\n':
		b.WriteString(`\n`)
	case r == '\r':
		b.WriteString(`\r`)
	case r < utf8.RuneSelf:
		b.WriteString(`\x`)
		b.WriteString(hex2(byte(r)))
	case r <= 0xffff:
		b.WriteString(`\u`)
		b.WriteString(pad(strconv.FormatInt(int64(r), 16), 4))
	default:
		b.WriteString(`\U`)
		b.WriteString(pad(strconv.FormatInt(int64(r), 16), 8))
	}
}

func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&15]})
}

func pad(s string, n int) string { return strings.Repeat("0", max(0, n-len(s))) + s }

// JSON returns a JSON text with every character a terminal would act on
// written as a \u escape, which decodes to the same string: encoding/json
// leaves C1 controls, bidirectional overrides and other format characters
// as they are, and a record read back from the broker may hold raw control
// bytes (it is then not valid JSON, and stays so). Tabs are kept, as JSON
// white space. A byte of invalid UTF-8 becomes \ufffd, as encoding/json
// would have written it. b is returned as it is when nothing needs escaping.
func JSON(b []byte) []byte {
	i := firstUnsafe(b)
	if i < 0 {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	out = append(out, b[:i]...)
	for i < len(b) {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = append(out, `\ufffd`...)
		case r == '\t' || safe(r):
			out = append(out, b[i:i+size]...)
		case r > 0xffff:
			hi, lo := utf16.EncodeRune(r)
			out = appendU(appendU(out, hi), lo)
		default:
			out = appendU(out, r)
		}
		i += size
	}
	return out
}

// firstUnsafe is the index of the first byte JSON has to look at: a
// control byte or the start of a non-ASCII character that is not safe;
// -1 if none.
func firstUnsafe(b []byte) int {
	for i := 0; i < len(b); {
		c := b[i]
		if c >= 0x20 && c < 0x7f || c == '\t' {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			return i
		}
		r, size := utf8.DecodeRune(b[i:])
		if (r == utf8.RuneError && size == 1) || !safe(r) {
			return i
		}
		i += size
	}
	return -1
}

func appendU(out []byte, r rune) []byte {
	return append(append(out, `\u`...), pad(strconv.FormatInt(int64(r), 16), 4)...)
}
