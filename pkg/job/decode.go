package job

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxLineBytes bounds one input line (JSON Lines) or one element (JSON
// array). Longer entries are reported and skipped without being held in
// memory, so a hostile or broken file costs at most this much buffer.
const MaxLineBytes = 1 << 20

// readBufferSize is what the Decoder reads at a time; lines that fit are
// decoded in place, longer ones are assembled in a buffer of their own.
const readBufferSize = 64 << 10

// LineError reports why one entry of an input file is not a valid job. The
// Decoder that returned it can go on with the next entry.
type LineError struct {
	File string
	// Line is 1-based: the entry's line in JSON Lines, the line where the
	// element starts in a JSON array.
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

func (e *LineError) Unwrap() error { return e.Err }

type state int

const (
	stateStart        state = iota // format not known yet
	stateLines                     // JSON Lines
	stateArrayFirst                // after "[": an element or "]"
	stateArrayElement              // after ",": an element
	stateArrayNext                 // after an element: "," or "]"
	stateArrayClosed               // after "]": only white space
	stateDone
)

// Decoder reads jobs from a job file one entry at a time, holding at most one
// entry of input in memory (plus the id bookkeeping described in the package
// documentation). The format is detected from the first non-white-space
// byte: "[" starts a JSON array of objects, anything else is JSON Lines.
type Decoder struct {
	r    *bufio.Reader
	file string

	state state
	err   error // sticky: reading failed

	// line counts the newlines consumed; col the bytes consumed since the
	// last one. Together they place every entry and every error.
	line int
	col  int

	buf []byte // reused for entries that do not fit the read buffer
	ids ids
	// secretHeaders are left out of derived ids (SetSecretHeaders).
	secretHeaders []string

	entryLine int // where the entry last decoded starts
	// sawEntry: a non-blank line was read; only the first can tell CSV.
	sawEntry bool
}

// NewDecoder returns a Decoder for r; file names it in errors.
func NewDecoder(r io.Reader, file string) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, readBufferSize), file: file}
}

// Next returns the next valid job, or a *LineError for an invalid entry
// (call Next again to go on), or io.EOF after the last entry. In a JSON
// array that is broken between elements (truncated, garbage, a missing
// comma) there is no telling where the next element starts, so the
// *LineError for that is followed by io.EOF. Any other error means reading
// failed; it is returned again by every later call.
//
// Next fills ID (derived if the entry has none), Method, URL, Headers, Data,
// Callback, ReplyTo and Timeout; Batch and EnqueuedAt are the enqueuer's.
func (d *Decoder) Next() (*Job, error) {
	if d.err != nil {
		return nil, d.err
	}
	j, err := d.next()
	if err != nil && err != io.EOF {
		if _, ok := errors.AsType[*LineError](err); !ok {
			d.err = fmt.Errorf("reading %s: %w", d.file, err)
			d.state = stateDone
			return nil, d.err
		}
	}
	return j, err
}

// Line is the line where the entry last returned by Next starts, so a
// caller can place problems found later (e.g. a job too large for the
// broker) as FILE:LINE too.
func (d *Decoder) Line() int { return d.entryLine }

func (d *Decoder) next() (*Job, error) {
	if d.state == stateStart {
		if err := d.detect(); err != nil {
			return nil, err
		}
	}
	switch d.state {
	case stateLines:
		return d.nextLine()
	case stateDone:
		return nil, io.EOF
	default:
		return d.nextElement()
	}
}

// detect skips a UTF-8 byte order mark and leading white space and chooses
// the format.
func (d *Decoder) detect() error {
	if b, err := d.r.Peek(3); err == nil && string(b) == "\uFEFF" {
		_, _ = d.r.Discard(3)
	}
	// Windows tools like to write UTF-16; said once, that beats a NUL-byte
	// error on every line.
	if b, err := d.r.Peek(2); err == nil && (string(b) == "\xff\xfe" || string(b) == "\xfe\xff") {
		return d.broken(1, errors.New("the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8"))
	}
	c, err := d.peekNonSpace()
	switch {
	case err == io.EOF:
		d.state = stateDone
		return nil
	case err != nil:
		return err
	case c == '[':
		d.consume()
		d.state = stateArrayFirst
	default:
		d.state = stateLines
	}
	return nil
}

// nextLine decodes the next non-blank line of a JSON Lines input.
func (d *Decoder) nextLine() (*Job, error) {
	for {
		lineNo := d.line + 1
		// Only the first line can have been partly consumed, by detect.
		col := d.col + 1
		d.col = 0
		line, tooLong, err := d.readLine()
		if err == io.EOF {
			d.state = stateDone
			return nil, io.EOF
		}
		if err != nil {
			return nil, err
		}
		if tooLong {
			return nil, d.lineError(lineNo, fmt.Errorf("line is longer than the limit of %d bytes", MaxLineBytes))
		}
		if isBlank(line) {
			continue
		}
		if !d.sawEntry && looksLikeCSV(d.file, line) {
			// One message for the file: every line would fail alike.
			return nil, d.broken(lineNo, errors.New(`this looks like CSV; jetpost reads JSON Lines (one object per line, e.g. {"url": "https://example.com/"}) or a JSON array of such objects`))
		}
		d.sawEntry = true
		j, err := d.decodeEntry(line, lineNo, col, false)
		if err != nil {
			return nil, d.lineError(lineNo, err)
		}
		return j, nil
	}
}

// readLine returns the next line without its end of line. A line that fits
// the read buffer is returned in place (valid until the next read); a longer
// one is assembled in d.buf up to the limit and only counted beyond it.
func (d *Decoder) readLine() (line []byte, tooLong bool, err error) {
	frag, err := d.r.ReadSlice('\n')
	switch err {
	case nil:
		d.line++
		return trimEOL(frag), false, nil
	case io.EOF:
		if len(frag) == 0 {
			return nil, false, io.EOF
		}
		return trimEOL(frag), false, nil
	case bufio.ErrBufferFull:
	default:
		return nil, false, err
	}
	d.buf = append(d.buf[:0], frag...)
	for {
		frag, err = d.r.ReadSlice('\n')
		// +2 leaves room for the "\r\n" that does not count.
		if !tooLong && len(d.buf)+len(frag) > MaxLineBytes+2 {
			tooLong = true
		}
		if !tooLong {
			d.buf = append(d.buf, frag...)
		}
		switch err {
		case nil:
			d.line++
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
		default:
			return nil, false, err
		}
		break
	}
	line = trimEOL(d.buf)
	return line, tooLong || len(line) > MaxLineBytes, nil
}

// nextElement decodes the next element of a JSON array.
func (d *Decoder) nextElement() (*Job, error) {
	for {
		c, err := d.peekNonSpace()
		if err == io.EOF {
			if d.state == stateArrayClosed {
				d.state = stateDone
				return nil, io.EOF
			}
			return nil, d.broken(d.line+1, errors.New("unexpected end of input: the JSON array is not closed with ]"))
		}
		if err != nil {
			return nil, err
		}
		switch d.state {
		case stateArrayClosed:
			return nil, d.broken(d.line+1, fmt.Errorf("unexpected %s after the end of the JSON array", describeByte(c)))
		case stateArrayNext:
			switch c {
			case ',':
				d.consume()
				d.state = stateArrayElement
			case ']':
				d.consume()
				d.state = stateArrayClosed
			default:
				return nil, d.broken(d.line+1, fmt.Errorf("expected , or ] after an array element, found %s", describeByte(c)))
			}
			continue
		}
		switch c {
		case ']':
			if d.state == stateArrayElement {
				return nil, d.broken(d.line+1, errors.New("unexpected ] after a comma: trailing commas are not allowed in JSON"))
			}
			d.consume()
			d.state = stateArrayClosed
			continue
		case ',', ':', '}':
			return nil, d.broken(d.line+1, fmt.Errorf("unexpected %s where an array element should start", describeByte(c)))
		}
		lineNo, col := d.line+1, d.col+1
		raw, tooLong, err := d.scanValue()
		if err == io.EOF {
			return nil, d.broken(lineNo, errors.New("unexpected end of input inside this element: the JSON array is truncated"))
		}
		if err != nil {
			return nil, err
		}
		d.state = stateArrayNext
		if tooLong {
			return nil, d.lineError(lineNo, fmt.Errorf("array element is longer than the limit of %d bytes", MaxLineBytes))
		}
		j, err := d.decodeEntry(raw, lineNo, col, true)
		if err != nil {
			return nil, d.lineError(lineNo, err)
		}
		return j, nil
	}
}

// looksLikeCSV reports whether the first line of a JSON Lines input is
// rather a CSV (or TSV) header or row: not an object, with separators, or
// in a file named so.
func looksLikeCSV(file string, line []byte) bool {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] == '{' || json.Valid(line) {
		return false
	}
	ext := strings.ToLower(file)
	if strings.HasSuffix(ext, ".csv") || strings.HasSuffix(ext, ".tsv") {
		return true
	}
	return bytes.ContainsAny(line, ",;\t")
}

// broken reports a JSON array that cannot be resynchronised and ends the
// input.
func (d *Decoder) broken(line int, err error) error {
	d.state = stateDone
	return d.lineError(line, err)
}

func (d *Decoder) lineError(line int, err error) *LineError {
	return &LineError{File: d.file, Line: line, Err: err}
}

// fill returns the buffered input, reading more if there is none.
func (d *Decoder) fill() ([]byte, error) {
	if d.r.Buffered() == 0 {
		if _, err := d.r.Peek(1); err != nil {
			return nil, err
		}
	}
	b, _ := d.r.Peek(d.r.Buffered())
	return b, nil
}

// advance consumes n buffered bytes, b[:n], keeping line and col.
func (d *Decoder) advance(b []byte, n int) {
	if nl := bytes.Count(b[:n], []byte{'\n'}); nl > 0 {
		d.line += nl
		d.col = n - 1 - bytes.LastIndexByte(b[:n], '\n')
	} else {
		d.col += n
	}
	_, _ = d.r.Discard(n)
}

// consume consumes one byte that is not a newline, after a peek.
func (d *Decoder) consume() {
	d.col++
	_, _ = d.r.Discard(1)
}

// peekNonSpace consumes JSON white space and returns the next byte, not
// consumed.
func (d *Decoder) peekNonSpace() (byte, error) {
	for {
		b, err := d.fill()
		if err != nil {
			return 0, err
		}
		for i, c := range b {
			if !isSpace(c) {
				d.advance(b, i)
				return c, nil
			}
		}
		d.advance(b, len(b))
	}
}

// scanValue consumes one JSON value of an array and returns its bytes. It
// only finds where the value ends (matching brackets outside strings);
// checking it is json's job. Past MaxLineBytes it keeps scanning but stops
// keeping bytes.
func (d *Decoder) scanValue() (raw []byte, tooLong bool, err error) {
	d.buf = d.buf[:0]
	var (
		first  = true
		scalar bool // a number or literal: ends before a delimiter
		depth  int
		inStr  bool
		escape bool
	)
	for {
		b, err := d.fill()
		if err != nil {
			return nil, false, err
		}
		n, done := 0, false
	scan:
		for ; n < len(b); n++ {
			c := b[n]
			if first {
				first = false
				scalar = c != '{' && c != '[' && c != '"'
				if scalar {
					continue // always take the first byte: progress
				}
			}
			switch {
			case scalar:
				if isSpace(c) || c == ',' || c == ']' {
					done = true
					break scan
				}
			case inStr:
				switch {
				case escape:
					escape = false
				case c == '\\':
					escape = true
				case c == '"':
					inStr = false
					if depth == 0 {
						n++
						done = true
						break scan
					}
				}
			case c == '"':
				inStr = true
			case c == '{' || c == '[':
				depth++
			case c == '}' || c == ']':
				depth--
				if depth == 0 {
					n++
					done = true
					break scan
				}
			}
		}
		if !tooLong && len(d.buf)+n > MaxLineBytes {
			tooLong = true
		}
		if !tooLong {
			d.buf = append(d.buf, b[:n]...)
		}
		d.advance(b, n)
		if done {
			return d.buf, tooLong, nil
		}
	}
}

// decodeEntry turns one line or array element into a job. line and col
// place raw[0] in the file, for error positions.
func (d *Decoder) decodeEntry(raw []byte, line, col int, inArray bool) (*Job, error) {
	d.entryLine = line
	p := position{raw: raw, line: line, col: col}
	if i := bytes.IndexByte(raw, 0); i >= 0 {
		return nil, fmt.Errorf("NUL byte at %s (is this a binary file?)", p.at(i))
	}
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD: a URL or
	// header the user did not write.
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("invalid UTF-8 at %s", p.at(invalidUTF8(raw)))
	}
	// One parse serves the field checks and the derived id; UseNumber keeps
	// numbers as written, so the id does not depend on float rounding.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, syntaxError(p, err, inArray)
	}
	fields, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("expected a JSON object, got %s", kindOf(v))
	}
	if end := int(dec.InputOffset()); !isBlank(raw[end:]) {
		i := end
		for isSpace(raw[i]) {
			i++
		}
		return nil, fmt.Errorf("unexpected data after the JSON object at %s", p.at(i))
	}
	j, err := jobFromFields(fields, raw)
	if err != nil {
		return nil, err
	}
	if j.ID == "" {
		k, err := canonicalKey(identityFields(fields, d.secretHeaders))
		if err != nil {
			return nil, err
		}
		j.ID = d.ids.derive(k, line)
		if err := j.Validate(); err != nil {
			return nil, err
		}
		if err := d.ids.claimDerived(j.ID); err != nil {
			return nil, err
		}
		return j, nil
	}
	if err := j.Validate(); err != nil {
		return nil, err
	}
	if err := d.ids.claimExplicit(j.ID, line); err != nil {
		return nil, err
	}
	return j, nil
}

// syntaxError rewords json's syntax errors with a position in the file.
func syntaxError(p position, err error, inArray bool) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		if inArray {
			return errors.New("truncated JSON: the element ends before it is complete")
		}
		return errors.New("truncated JSON: the line ends before the object is closed (JSON Lines needs one whole object per line; a pretty-printed file must be a JSON array)")
	}
	se, ok := errors.AsType[*json.SyntaxError](err)
	if !ok {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	// Offset counts the bytes read including the offending one.
	i := min(max(int(se.Offset)-1, 0), len(p.raw))
	return fmt.Errorf("invalid JSON at %s: %w", p.at(i), se)
}

// position places an offset of an entry in the file.
type position struct {
	raw       []byte
	line, col int // of raw[0]
}

func (p position) at(i int) string {
	before := p.raw[:min(i, len(p.raw))]
	nl := bytes.Count(before, []byte{'\n'})
	if nl == 0 {
		return fmt.Sprintf("column %d", p.col+i)
	}
	col := len(before) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d", p.line+nl, col)
}

// Input field names; anything else in an entry is an error.
const (
	fieldID       = "id"
	fieldMethod   = "method"
	fieldURL      = "url"
	fieldHeaders  = "headers"
	fieldData     = "data"
	fieldJSON     = "json"
	fieldParams   = "params"
	fieldCallback = "callback"
	fieldReplyTo  = "reply_to"
	fieldTimeout  = "timeout"
)

func isField(name string) bool {
	switch name {
	case fieldID, fieldMethod, fieldURL, fieldHeaders, fieldData, fieldJSON, fieldParams, fieldCallback, fieldReplyTo, fieldTimeout:
		return true
	}
	return false
}

// jobFromFields applies the input rules to the fields of one entry; raw is
// the entry, for the bytes of "data". A null value counts as absent, as
// files generated by other tools write them.
func jobFromFields(fields map[string]any, raw []byte) (*Job, error) {
	if err := checkUnknown(fields); err != nil {
		return nil, err
	}
	j := &Job{Method: "GET"}
	var err error
	if v := fields[fieldID]; v != nil {
		if j.ID, err = stringField(fieldID, v); err != nil {
			return nil, err
		}
		if j.ID == "" {
			return nil, errors.New(`id is empty (leave "id" out to have one derived)`)
		}
	}
	if v := fields[fieldMethod]; v != nil {
		m, err := stringField(fieldMethod, v)
		if err != nil {
			return nil, err
		}
		j.Method = asciiUpper(m)
	}
	if v := fields[fieldURL]; v != nil {
		if j.URL, err = stringField(fieldURL, v); err != nil {
			return nil, err
		}
	}
	if v := fields[fieldHeaders]; v != nil {
		if j.Headers, err = headersField(v); err != nil {
			return nil, err
		}
	}
	// The bytes as written, not a re-encoding: an API may sign or compare
	// the body byte for byte, and form and query pairs keep their order.
	for _, f := range [...]struct {
		name string
		dst  *json.RawMessage
	}{{fieldData, &j.Data}, {fieldJSON, &j.JSON}, {fieldParams, &j.Params}} {
		if fields[f.name] != nil {
			*f.dst = bytes.Clone(rawField(raw, f.name))
		}
	}
	if v := fields[fieldCallback]; v != nil {
		if j.Callback, err = stringField(fieldCallback, v); err != nil {
			return nil, err
		}
	}
	if v := fields[fieldReplyTo]; v != nil {
		if j.ReplyTo, err = stringField(fieldReplyTo, v); err != nil {
			return nil, err
		}
	}
	if v := fields[fieldTimeout]; v != nil {
		switch t := v.(type) {
		case string:
			err = j.Timeout.setString(t)
		case json.Number:
			err = j.Timeout.setSeconds(string(t))
		default:
			err = fmt.Errorf(`timeout: must be a duration string like "30s" or a number of seconds, got %s`, kindOf(v))
		}
		if err != nil {
			return nil, err
		}
	}
	return j, nil
}

func checkUnknown(fields map[string]any) error {
	var unknown []string
	for name := range fields {
		if !isField(name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown) // map order would make the message random
	var b strings.Builder
	b.WriteString("unknown field")
	if len(unknown) > 1 {
		b.WriteString("s")
	}
	for i, name := range unknown {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s", quote(name))
		if hint := fieldHint(name); hint != "" {
			fmt.Fprintf(&b, " (%s)", hint)
		}
	}
	return errors.New(b.String())
}

// fieldHint suggests what a user meant by an unknown field, so that a
// misspelt "headres" is fixed at once.
func fieldHint(name string) string {
	switch name {
	case "batch", "enqueued_at":
		return "set by enqueue, not by the file"
	case "body", "payload", "form":
		return `a body is "data" (text, or an object sent as a form) or "json"`
	case "query", "query_params":
		return `query parameters are "params" (an object) or part of "url"`
	}
	if hint, ok := aiohttpHints[name]; ok {
		return "aiohttp's " + name + "= is not a job field; " + hint
	}
	if len(name) > 32 {
		return ""
	}
	lower := strings.ToLower(name)
	best, bestDist := "", 3
	for _, f := range []string{fieldID, fieldMethod, fieldURL, fieldHeaders, fieldData, fieldJSON, fieldParams, fieldCallback, fieldReplyTo, fieldTimeout} {
		// Short names are too close to everything to guess from.
		limit := 2
		if len(f) <= 3 {
			limit = 1
		}
		if dist := EditDistance(lower, f); dist <= limit && dist < bestDist {
			best, bestDist = f, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("did you mean %q?", best)
}

// aiohttpHints says what to write instead of the keyword arguments of
// aiohttp's request() that are not job fields, for files and scripts
// written for aiohttp.
var aiohttpHints = map[string]string{
	"auth":              `set an "Authorization" header in "headers" (e.g. "Basic " + base64 of "user:password")`,
	"cookies":           `set a "Cookie" header in "headers" ("name=value; other=value")`,
	"allow_redirects":   "redirects are the deployment's: JETPOST_MAX_REDIRECTS (0 turns them off)",
	"max_redirects":     "redirects are the deployment's: JETPOST_MAX_REDIRECTS",
	"proxy":             "not supported: workers connect to the target directly",
	"proxy_auth":        "not supported: workers connect to the target directly",
	"proxy_headers":     "not supported: workers connect to the target directly",
	"ssl":               "not supported per job: TLS certificates are always verified against the system's roots",
	"verify_ssl":        "not supported per job: TLS certificates are always verified against the system's roots",
	"ssl_context":       "not supported per job: TLS certificates are always verified against the system's roots",
	"fingerprint":       "not supported per job: TLS certificates are always verified against the system's roots",
	"server_hostname":   "not supported: the TLS server name is the URL's host",
	"compress":          `not supported: send the body as it should arrive, with a "Content-Encoding" header if it is compressed`,
	"chunked":           "not needed: jetpost sends the body with a Content-Length",
	"expect100":         `set an "Expect: 100-continue" header in "headers"`,
	"raise_for_status":  "not needed: a non-2xx answer already fails the job (retried for 408, 425, 429 and 5xx)",
	"read_until_eof":    "not needed: jetpost reads the response body (results keep its start, up to the configured limit)",
	"read_bufsize":      "not needed: jetpost sizes its buffers",
	"auto_decompress":   `not needed: jetpost asks for gzip and decompresses it, unless the job sets its own "Accept-Encoding"`,
	"skip_auto_headers": `not supported: set the header you want in "headers" instead`,
	"trace_request_ctx": "not supported: each job has its result, and workers export /metrics",
	"version":           "not supported: the HTTP version is negotiated (HTTP/2 over TLS where the server offers it)",
}

// EditDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours each count one, so
// "headres" is one away from "headers". Job fields and environment
// variable names both suggest the closest known name with it.
func EditDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

func stringField(name string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: must be a string, got %s", name, kindOf(v))
	}
	return s, nil
}

func headersField(v any) (map[string]string, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("headers: must be an object of strings, got %s", kindOf(v))
	}
	if len(m) == 0 {
		return nil, nil
	}
	h := make(map[string]string, len(m))
	var bad []string
	for k, v := range m {
		s, ok := v.(string)
		if !ok {
			bad = append(bad, k)
			continue
		}
		h[k] = s
	}
	if len(bad) > 0 {
		k := slices.Min(bad) // the same header every run
		return nil, fmt.Errorf("headers: %s must be a string, got %s", quote(k), kindOf(m[k]))
	}
	return h, nil
}

// kindOf names the JSON type of a value decoded with UseNumber.
func kindOf(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return "number"
}

// asciiUpper upper-cases ASCII letters only: strings.ToUpper would turn
// "poſt" into "POST" and accept a method the user did not write.
func asciiUpper(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'a' && c <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'a' && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("%q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// isBlank uses JSON's notion of white space, not Unicode's: a line holding
// only a no-break space is an error, not an empty line.
func isBlank(b []byte) bool {
	for _, c := range b {
		if !isSpace(c) {
			return false
		}
	}
	return true
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte{'\n'})
	return bytes.TrimSuffix(b, []byte{'\r'})
}

func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}
