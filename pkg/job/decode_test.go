package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// decodeAll runs a Decoder to the end. Every error must be a *LineError; the
// number of calls is bounded so that a Decoder that stops making progress
// fails the test instead of hanging it.
func decodeAll(t testing.TB, file string, r io.Reader) (jobs []*Job, errs []*LineError) {
	t.Helper()
	d := NewDecoder(r, file)
	for range 1 << 22 {
		j, err := d.Next()
		if err == io.EOF {
			if j != nil {
				t.Fatalf("Next returned a job with io.EOF")
			}
			// EOF is final.
			if _, err := d.Next(); err != io.EOF {
				t.Fatalf("Next after io.EOF = %v, want io.EOF", err)
			}
			return jobs, errs
		}
		if err != nil {
			le, ok := err.(*LineError)
			if !ok {
				t.Fatalf("Next returned %T %v, want *LineError", err, err)
			}
			if j != nil {
				t.Fatalf("Next returned a job with error %v", err)
			}
			errs = append(errs, le)
			continue
		}
		jobs = append(jobs, j)
	}
	t.Fatalf("decoder did not reach io.EOF")
	return nil, nil
}

func decodeString(t testing.TB, file, in string) ([]*Job, []*LineError) {
	t.Helper()
	return decodeAll(t, file, strings.NewReader(in))
}

func TestDecoderMalformed(t *testing.T) {
	longLine := `{"url":"http://a/","data":"` + strings.Repeat("x", MaxLineBytes) + `"}`
	longElement := "[\n" + `{"url":"http://a/"},` + "\n" + longLine + ",\n" + `{"url":"http://c/"}` + "\n]"

	tests := []struct {
		name string
		file string // default f.jsonl
		in   string
		want []string // each error in order, as a substring of Error()
		jobs int
	}{
		{"truncated JSON", "", `{"url":"http://a/"`,
			[]string{"f.jsonl:1: truncated JSON: the line ends before the object is closed"}, 0},
		{"pretty-printed object in JSON Lines", "", "{\n  \"url\": \"http://a/\"\n}\n",
			[]string{"f.jsonl:1: truncated JSON", "f.jsonl:2: expected a JSON object, got string", "f.jsonl:3: invalid JSON at column 1: invalid character '}'"}, 0},
		{"syntax error", "", `{"url" "http://a/"}`,
			[]string{`f.jsonl:1: invalid JSON at column 8: invalid character '"' after object key`}, 0},
		{"url number", "", `{"url": 5}`,
			[]string{"f.jsonl:1: url: must be a string, got number"}, 0},
		{"headers array", "", `{"url":"http://a/","headers":["Accept: */*"]}`,
			[]string{"f.jsonl:1: headers: must be an object of strings, got array"}, 0},
		{"header value number", "", `{"url":"http://a/","headers":{"Accept":"*/*","X-Count":1,"X-Zed":true}}`,
			[]string{`f.jsonl:1: headers: "X-Count" must be a string, got number`}, 0},
		{"header value with newline", "", `{"url":"http://a/","headers":{"X-A":"a\r\nHost: evil"}}`,
			[]string{`f.jsonl:1: header "X-A" has a control character in its value`}, 0},
		{"header name with space", "", `{"url":"http://a/","headers":{"X A":"1"}}`,
			[]string{`f.jsonl:1: header name "X A" is not valid`}, 0},
		{"first bad header by name", "", `{"url":"http://a/","headers":{"Z Z":"1","B B":"1","Ok":"1","C C":"1","A":"\u0001"}}`,
			[]string{`f.jsonl:1: header "A" has a control character in its value`}, 0},
		{"method number", "", `{"url":"http://a/","method":1}`,
			[]string{"f.jsonl:1: method: must be a string, got number"}, 0},
		{"bad method", "", `{"url":"http://a/","method":"GE T"}`,
			[]string{`f.jsonl:1: method "GE T" is not a valid HTTP method`}, 0},
		{"method is upper-cased ASCII only", "", `{"url":"http://a/","method":"poſt"}`,
			[]string{`f.jsonl:1: method "POſT" is not a valid HTTP method`}, 0},
		{"timeout bool", "", `{"url":"http://a/","timeout":true}`,
			[]string{`f.jsonl:1: timeout: must be a duration string like "30s" or a number of seconds, got boolean`}, 0},
		{"bad timeout string", "", `{"url":"http://a/","timeout":"soon"}`,
			[]string{`f.jsonl:1: timeout "soon" is not a duration like "30s"`}, 0},
		{"negative timeout string", "", `{"url":"http://a/","timeout":"-5s"}`,
			[]string{"f.jsonl:1: timeout is negative"}, 0},
		{"negative timeout seconds", "", `{"url":"http://a/","timeout":-1}`,
			[]string{"f.jsonl:1: timeout -1 seconds is out of range"}, 0},
		{"unsupported scheme", "", `{"url":"ftp://a/b"}`,
			[]string{`f.jsonl:1: url "ftp://a/b" must be an absolute http or https URL`}, 0},
		{"relative URL", "", `{"url":"/path?q=1"}`,
			[]string{`f.jsonl:1: url "/path?q=1" must be an absolute http or https URL`}, 0},
		{"missing URL", "", `{"method":"POST"}`,
			[]string{"f.jsonl:1: url is missing"}, 0},
		{"URL without a scheme", "", `{"url":"api.example.com/v1?q=1"}`,
			[]string{`f.jsonl:1: url "api.example.com/v1?q=1" has no scheme: write "https://api.example.com/v1?q=1" (or "http://api.example.com/v1?q=1")`}, 0},
		{"host and port without a scheme", "", `{"url":"127.0.0.1:8088/x"}` + "\n" + `{"url":"localhost:8080"}` + "\n" + `{"url":"//cdn.example.com/a"}`,
			[]string{`f.jsonl:1: url "127.0.0.1:8088/x" has no scheme: write "https://127.0.0.1:8088/x" (or "http://127.0.0.1:8088/x")`,
				`f.jsonl:2: url "localhost:8080" has no scheme: write "https://localhost:8080"`,
				`f.jsonl:3: url "//cdn.example.com/a" has no scheme: write "https://cdn.example.com/a"`}, 0},
		{"callback without a scheme, secret redacted", "", `{"url":"http://a/","callback":"hooks.example.com/cb?token=s3cret"}`,
			[]string{`f.jsonl:1: callback "hooks.example.com/cb?token=REDACTED" has no scheme: write "https://hooks.example.com/cb?token=REDACTED"`}, 0},
		{"CSV file: one message", "orders.csv", "id,method,url\n1,GET,http://a/\n2,GET,http://b/\n3,GET,http://c/\n",
			[]string{`orders.csv:1: this looks like CSV; jetpost reads JSON Lines (one object per line, e.g. {"url": "https://example.com/"}) or a JSON array of such objects`}, 0},
		{"CSV without the name", "", "\nurl;method\nhttp://a/;GET\nhttp://b/;GET\n",
			[]string{`f.jsonl:2: this looks like CSV`}, 0},
		{"one-column CSV named so", "urls.csv", "http://a/\nhttp://b/\n",
			[]string{`urls.csv:1: this looks like CSV`}, 0},
		{"commas on a later line are not CSV", "", `{"url":"http://a/"}` + "\n" + `a,b` + "\n" + `c,d`,
			[]string{"f.jsonl:2: invalid JSON at column 1", "f.jsonl:3: invalid JSON at column 1"}, 1},
		{"aiohttp keywords", "", `{"url":"http://a/","auth":["u","p"],"cookies":{"s":"1"},"allow_redirects":false}`,
			[]string{`f.jsonl:1: unknown fields "allow_redirects" (aiohttp's allow_redirects= is not a job field; redirects are the deployment's: JETPOST_MAX_REDIRECTS (0 turns them off)),` +
				` "auth" (aiohttp's auth= is not a job field; set an "Authorization" header in "headers" (e.g. "Basic " + base64 of "user:password")),` +
				` "cookies" (aiohttp's cookies= is not a job field; set a "Cookie" header in "headers" ("name=value; other=value"))`}, 0},
		{"more aiohttp keywords", "", `{"url":"http://a/","proxy":"http://p:3128","ssl":false,"raise_for_status":true}`,
			[]string{`"proxy" (aiohttp's proxy= is not a job field; not supported: workers connect to the target directly)`}, 0},
		{"null URL", "", `{"url":null}`,
			[]string{"f.jsonl:1: url is missing"}, 0},
		{"URL without host", "", `{"url":"http:///x"}`,
			[]string{`f.jsonl:1: url "http:///x" has no host`}, 0},
		{"URL with port only", "", `{"url":"http://:80/x"}`,
			[]string{`f.jsonl:1: url "http://:80/x" has no host`}, 0},
		{"host longer than a DNS name", "", `{"url":"http://` + strings.Repeat("a", 254) + `/x"}`,
			[]string{"f.jsonl:1: url host is 254 bytes, limit 253"}, 0},
		{"host of the longest DNS name", "", `{"url":"http://` + strings.Repeat("a", 253) + `/x"}`, nil, 1},
		{"huge line is skipped", "", `{"url":"http://a/"}` + "\n" + longLine + "\n" + `{"url":"http://c/"}`,
			[]string{"f.jsonl:2: line is longer than the limit of 1048576 bytes"}, 2},
		{"invalid UTF-8", "", "{\"url\":\"http://a/\xff\"}",
			[]string{"f.jsonl:1: invalid UTF-8 at column 18"}, 0},
		{"NUL byte", "", "{\"url\":\"http://a/\"}\x00",
			[]string{"f.jsonl:1: NUL byte at column 20"}, 0},
		{"BOM is skipped", "", "\uFEFF" + `{"url":"http://a/"}`, nil, 1},
		{"BOM before an array", "f.json", "\uFEFF" + `[{"url":"http://a/"}]`, nil, 1},
		{"duplicate explicit id", "", `{"id":"a","url":"http://a/"}` + "\n" + `{"id":"b","url":"http://b/"}` + "\n" + `{"id":"a","url":"http://c/"}`,
			[]string{`f.jsonl:3: duplicate id "a" (first at line 1)`}, 2},
		{"UTF-16 file", "", "\xff\xfe{\x00\"\x00u\x00", []string{"f.jsonl:1: the file is UTF-16"}, 0},
		{"empty file", "", "", nil, 0},
		{"white space only", "", "\n \r\n\t\n", nil, 0},
		{"array element, not object", "", `{"url":"http://a/"}` + "\n" + `[1,2]`,
			[]string{"f.jsonl:2: expected a JSON object, got array"}, 1},
		{"string, not object", "", `"str"`,
			[]string{"f.jsonl:1: expected a JSON object, got string"}, 0},
		{"number, not object", "", `42`,
			[]string{"f.jsonl:1: expected a JSON object, got number"}, 0},
		{"null, not object", "", `null`,
			[]string{"f.jsonl:1: expected a JSON object, got null"}, 0},
		{"boolean, not object", "", `true`,
			[]string{"f.jsonl:1: expected a JSON object, got boolean"}, 0},
		{"array of numbers", "f.json", `[1,2]`,
			[]string{"f.json:1: expected a JSON object, got number", "f.json:1: expected a JSON object, got number"}, 0},
		{"unknown field", "", `{"url":"http://a/","headres":{"A":"b"}}`,
			[]string{`f.jsonl:1: unknown field "headres" (did you mean "headers"?)`}, 0},
		{"unknown fields, sorted", "", `{"url":"http://a/","zz":1,"URL":"x","batch":"b"}`,
			[]string{`f.jsonl:1: unknown fields "URL" (did you mean "url"?), "batch" (set by enqueue, not by the file), "zz"`}, 0},
		{"reply_to wildcard", "", `{"url":"http://a/","reply_to":"results.*"}`,
			[]string{`f.jsonl:1: reply_to "results.*" is not a valid NATS subject`}, 0},
		{"callback not http", "", `{"url":"http://a/","callback":"ftp://cb/"}`,
			[]string{`f.jsonl:1: callback "ftp://cb/" must be an absolute http or https URL`}, 0},
		{"callback not a string", "", `{"url":"http://a/","callback":{}}`,
			[]string{"f.jsonl:1: callback: must be a string, got object"}, 0},
		{"id not a string", "", `{"id":7,"url":"http://a/"}`,
			[]string{"f.jsonl:1: id: must be a string, got number"}, 0},
		{"id empty", "", `{"id":"","url":"http://a/"}`,
			[]string{"f.jsonl:1: id is empty"}, 0},
		{"id too long", "", `{"id":"` + strings.Repeat("i", MaxIDLen+1) + `","url":"http://a/"}`,
			[]string{"f.jsonl:1: id is 257 bytes, limit 256"}, 0},
		{"id with a line break", "", `{"id":"a\nb","url":"http://a/"}`,
			[]string{`f.jsonl:1: id "a\nb" has a control character`}, 0},
		{"CRLF line endings", "", `{"url":"http://a/"}` + "\r\n" + `{"url":"http://b/"}` + "\r\n\r\n" + `{"url":5}` + "\r\n",
			[]string{"f.jsonl:4: url: must be a string, got number"}, 2},
		{"blank lines count", "", "\n\n" + `{"url":"http://a/"}` + "\n\n  " + `{"url":5}`,
			[]string{"f.jsonl:5: url: must be a string, got number"}, 1},
		{"column after leading blank", "", "\n   {\"url\" 1}",
			[]string{"f.jsonl:2: invalid JSON at column 11"}, 0},
		{"no-break space is not blank", "", "\u00a0\n" + `{"url":"http://a/"}`,
			[]string{"f.jsonl:1: invalid JSON at column 1: invalid character 'Â'"}, 1},
		{"trailing garbage", "", `{"url":"http://a/"} x`,
			[]string{"f.jsonl:1: unexpected data after the JSON object at column 21"}, 0},
		{"two objects on a line", "", `{"url":"http://a/"}{"url":"http://b/"}`,
			[]string{"f.jsonl:1: unexpected data after the JSON object at column 20"}, 0},
		{"pretty array, bad element at line 3", "f.json", "[\n  {\"url\": \"http://a/\"},\n  {\"url\": 5},\n  {\"url\": \"http://c/\"}\n]\n",
			[]string{"f.json:3: url: must be a string, got number"}, 2},
		{"pretty array, multi-line elements", "f.json", "[\n  {\n    \"url\": \"http://a/\"\n  },\n  {\n    \"url\":\n      tru\n  },\n  {\"url\": \"http://c/\"}\n]",
			[]string{"f.json:5: invalid JSON at line 7, column 10: invalid character '\\n' in literal true"}, 2},
		{"array element syntax error does not stop", "f.json", "[\n{\"url\":},\n{\"url\":\"http://b/\"}\n]",
			[]string{"f.json:2: invalid JSON at column 8: invalid character '}'"}, 1},
		{"truncated JSON array", "f.json", "[\n  {\"url\": \"http://a/\"},\n  {\"url\": \"http://b/\"",
			[]string{"f.json:3: unexpected end of input inside this element: the JSON array is truncated"}, 1},
		{"JSON array not closed", "f.json", "[\n  {\"url\": \"http://a/\"},\n",
			[]string{"f.json:3: unexpected end of input: the JSON array is not closed with ]"}, 1},
		{"garbage between elements", "f.json", "[\n  {\"url\": \"http://a/\"}\n  x {\"url\": \"http://b/\"},\n  {\"url\": \"http://c/\"}\n]",
			[]string{"f.json:3: expected , or ] after an array element, found 'x'"}, 1},
		{"missing comma", "f.json", `[{"url":"http://a/"} {"url":"http://b/"}]`,
			[]string{"f.json:1: expected , or ] after an array element, found '{'"}, 1},
		{"double comma", "f.json", `[{"url":"http://a/"},,{"url":"http://b/"}]`,
			[]string{"f.json:1: unexpected ',' where an array element should start"}, 1},
		{"trailing comma", "f.json", "[\n{\"url\":\"http://a/\"},\n]",
			[]string{"f.json:3: unexpected ] after a comma"}, 1},
		{"data after the array", "f.json", "[{\"url\":\"http://a/\"}]\n\n[]",
			[]string{"f.json:3: unexpected '[' after the end of the JSON array"}, 1},
		{"empty array", "f.json", " [ ] \n", nil, 0},
		{"huge array element is skipped", "f.json", longElement,
			[]string{"f.json:3: array element is longer than the limit of 1048576 bytes"}, 2},
		{"NUL between elements", "f.json", "[{\"url\":\"http://a/\"}\x00]",
			[]string{"f.json:1: expected , or ] after an array element, found byte 0x00"}, 1},
		{"explicit id equal to a derived one", "", `{"url":"http://a/"}` + "\n" + `{"id":"h-b1e84d21dec243147d29","url":"http://b/"}`,
			[]string{`f.jsonl:2: duplicate id "h-b1e84d21dec243147d29": it was derived for an entry with no "id" (content first at line 1)`}, 1},
		{"derived id equal to an explicit one", "", `{"id":"h-b1e84d21dec243147d29-2","url":"http://b/"}` + "\n" + `{"url":"http://a/"}` + "\n" + `{"url":"http://a/"}`,
			[]string{`f.jsonl:3: derived id "h-b1e84d21dec243147d29-2" is already the explicit id of line 1`}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.file
			if file == "" {
				file = "f.jsonl"
			}
			jobs, errs := decodeString(t, file, tt.in)
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors %v, want %d %q", len(errs), errs, len(tt.want), tt.want)
			}
			for i, want := range tt.want {
				if got := errs[i].Error(); !strings.Contains(got, want) {
					t.Errorf("error %d = %q\nwant it to contain %q", i, got, want)
				}
			}
			if len(jobs) != tt.jobs {
				t.Errorf("got %d jobs, want %d", len(jobs), tt.jobs)
			}
		})
	}
}

// The derived ids in the tests above are pinned: a change to the canonical
// form would give every id-less line of every file a new id and enqueue each
// of them a second time.
func TestDeriveIDPinned(t *testing.T) {
	id, err := deriveID([]byte(`{"url":"http://a/"}`))
	if err != nil {
		t.Fatal(err)
	}
	if id != "h-b1e84d21dec243147d29" {
		t.Fatalf("deriveID = %q: the canonical form changed", id)
	}
}

func TestLineError(t *testing.T) {
	inner := errors.New("boom")
	err := error(&LineError{File: "in.jsonl", Line: 7, Err: inner})
	if got, want := err.Error(), "in.jsonl:7: boom"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, inner) {
		t.Error("LineError does not unwrap to its reason")
	}
}

func TestDecoderFields(t *testing.T) {
	in := `{"id":"x1","method":"post","url":"https://api.example.com/v1?q=1","headers":{"Authorization":"Bearer t","X-Empty":""},` +
		`"json":{"b":[1,2.50,"<&>"],"a":null},"callback":"https://cb.example.com/done","reply_to":"my.results","timeout":"1m30s"}` + "\n" +
		`{"url":"http://a/","timeout":2.5,"data":"plain text","method":null,"headers":{},"callback":null,"id":null}`
	jobs, errs := decodeString(t, "f.jsonl", in)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	j := jobs[0]
	if j.ID != "x1" || j.Method != "POST" || j.URL != "https://api.example.com/v1?q=1" ||
		j.Headers["Authorization"] != "Bearer t" || len(j.Headers) != 2 ||
		j.Callback != "https://cb.example.com/done" || j.ReplyTo != "my.results" ||
		time.Duration(j.Timeout) != 90*time.Second {
		t.Errorf("first job = %+v", j)
	}
	// JSON is kept byte for byte: key order, number spelling, no escaping.
	if got, want := string(j.JSON), `{"b":[1,2.50,"<&>"],"a":null}`; got != want {
		t.Errorf("JSON = %s, want %s", got, want)
	}
	if j.Batch != "" || !j.EnqueuedAt.IsZero() {
		t.Errorf("decoder set Batch or EnqueuedAt: %+v", j)
	}

	j = jobs[1]
	if j.Method != "GET" || time.Duration(j.Timeout) != 2500*time.Millisecond || j.Headers != nil || j.Callback != "" {
		t.Errorf("second job = %+v", j)
	}
	if !strings.HasPrefix(j.ID, "h-") {
		t.Errorf("null id was not derived: %q", j.ID)
	}
	if string(j.Data) != `"plain text"` {
		t.Errorf("Data = %s", j.Data)
	}
}

func TestDerivedIDsIgnoreFormatting(t *testing.T) {
	variants := []string{
		`{"url":"http://x/","method":"GET"}`,
		`{"method":"GET","url":"http://x/"}`,
		`{ "method" : "GET" ,  "url" : "http://x/" }`,
		"{\"method\":\t\"GET\",\r\"url\":\"http:\\/\\/x\\/\"}",
		`{"method":"\u0047ET","url":"http://x/"}`,
	}
	var want string
	for i, v := range variants {
		// Each variant alone in its own file: it is the first of its kind.
		jobs, errs := decodeString(t, "f.jsonl", v)
		if len(errs) != 0 || len(jobs) != 1 {
			t.Fatalf("variant %d: jobs %v errs %v", i, jobs, errs)
		}
		id, err := deriveID([]byte(v))
		if err != nil {
			t.Fatal(err)
		}
		if jobs[0].ID != id {
			t.Errorf("variant %d: Decoder id %q, deriveID %q", i, jobs[0].ID, id)
		}
		if i == 0 {
			want = id
		} else if id != want {
			t.Errorf("variant %d: id %q, want %q like variant 0", i, id, want)
		}
	}
	if len(want) != len("h-")+20 {
		t.Errorf("id %q: want h- and 20 hex digits", want)
	}

	// Content that differs in meaning must not share an id.
	other, _ := deriveID([]byte(`{"url":"http://x/","method":"POST"}`))
	if other == want {
		t.Error("different content, same id")
	}
	// Method is not normalised before hashing: "get" and "GET" are written
	// differently, and the hash is of what was written.
	lower, _ := deriveID([]byte(`{"url":"http://x/","method":"get"}`))
	if lower == want {
		t.Error("hash of the normalised job, not of the entry")
	}
}

func TestDerivedIDsSameInArrayAndLines(t *testing.T) {
	lines := `{"url":"http://a/"}` + "\n" + `{"url":"http://b/","data":{"k":1}}` + "\n" + `{"url":"http://a/"}`
	array := "[\n  {\"url\": \"http://a/\"},\n  {\n    \"url\": \"http://b/\",\n    \"data\": {\"k\": 1}\n  },\n  {\"url\": \"http://a/\"}\n]"
	a, errs := decodeString(t, "f.jsonl", lines)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	b, errs := decodeString(t, "f.json", array)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	if got, want := idList(b), idList(a); got != want {
		t.Errorf("array ids %s, lines ids %s", got, want)
	}
}

func idList(jobs []*Job) string {
	s := make([]string, len(jobs))
	for i, j := range jobs {
		s[i] = j.ID
	}
	return strings.Join(s, " ")
}

func TestDerivedIDRepeats(t *testing.T) {
	a := `{"url":"http://a/"}`
	b := `{"url":"http://b/"}`
	jobs, errs := decodeString(t, "f.jsonl", strings.Join([]string{a, b, a, a, `{ "url":"http://a/" }`, b}, "\n"))
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	ida, _ := deriveID([]byte(a))
	idb, _ := deriveID([]byte(b))
	want := strings.Join([]string{ida, idb, ida + "-2", ida + "-3", ida + "-4", idb + "-2"}, " ")
	if got := idList(jobs); got != want {
		t.Errorf("ids\n got %s\nwant %s", got, want)
	}
}

// Re-enqueueing a file with lines added (anywhere but between identical
// lines) must give every old line the id it had, so JetStream drops it.
func TestDerivedIDsStableWhenLinesAdded(t *testing.T) {
	before := []string{
		`{"url":"http://a/"}`,
		`{"url":"http://b/","method":"POST","data":{"x":1}}`,
		`{"id":"mine","url":"http://c/"}`,
		`{"url":"http://a/"}`,
	}
	after := []string{
		`{"url":"http://new1/"}`,
		`{"url":"http://a/"}`,
		`{"url":"http://new2/"}`,
		`{"url":"http://b/","method":"POST","data":{"x":1}}`,
		`{"url":"http://new3/"}`,
		`{"id":"mine","url":"http://c/"}`,
		`{"url":"http://a/"}`,
		`{"url":"http://new4/"}`,
	}
	old, errs := decodeString(t, "f.jsonl", strings.Join(before, "\n"))
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	grown, errs := decodeString(t, "f.jsonl", strings.Join(after, "\n"))
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	byID := map[string]*Job{}
	for _, j := range grown {
		if byID[j.ID] != nil {
			t.Fatalf("id %q twice", j.ID)
		}
		byID[j.ID] = j
	}
	for _, j := range old {
		g := byID[j.ID]
		if g == nil {
			t.Errorf("old job %s (%s) has no job of the same id after adding lines", j.ID, j.URL)
			continue
		}
		if g.URL != j.URL || g.Method != j.Method || string(g.Data) != string(j.Data) {
			t.Errorf("id %s now names %+v, was %+v", j.ID, g, j)
		}
	}
	if byID["mine"] == nil {
		t.Error("explicit id not kept")
	}
}

func TestDecoderReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	r := io.MultiReader(strings.NewReader(`{"url":"http://a/"}`+"\n"+`{"url":"http://b/"}`), iotest.ErrReader(boom))
	d := NewDecoder(r, "f.jsonl")
	if _, err := d.Next(); err != nil {
		t.Fatal(err)
	}
	// The second line has no newline yet: it may be incomplete, so the read
	// error wins over decoding it.
	_, err := d.Next()
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the read error", err)
	}
	if _, ok := errors.AsType[*LineError](err); ok {
		t.Fatal("a read error must not look like a line error")
	}
	if _, err2 := d.Next(); err2 != err {
		t.Errorf("read error not sticky: %v", err2)
	}
}

// A reader that hands out one byte at a time exercises every buffer
// boundary of the line reader and the array scanner.
func TestDecoderOneByteReads(t *testing.T) {
	for _, in := range []string{
		"\uFEFF" + `{"url":"http://a/"}` + "\r\n" + `{"url":1}` + "\n\n" + `{"url":"http://b/","data":"x]}\"{"}`,
		"\uFEFF\n [\n" + `{"url":"http://a/"},` + "\n" + `{"url":1}` + ",\n" + `{"url":"http://b/","data":"x]}\"{"}` + "\n]\n",
	} {
		want, wantErrs := decodeString(t, "f", in)
		got, gotErrs := decodeAll(t, "f", iotest.OneByteReader(strings.NewReader(in)))
		if idList(got) != idList(want) || fmt.Sprint(gotErrs) != fmt.Sprint(wantErrs) {
			t.Errorf("one-byte reads: %s %v\nwhole reads: %s %v", idList(got), gotErrs, idList(want), wantErrs)
		}
		if len(want) != 2 || len(wantErrs) != 1 || wantErrs[0].Line != 2 && wantErrs[0].Line != 4 {
			t.Errorf("%q: jobs %s errs %v", in, idList(want), wantErrs)
		}
	}
}

// repeatReader produces n copies of line without holding them, standing in
// for a file larger than the memory a decoder may use.
type repeatReader struct {
	line []byte
	n    int
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	total := 0
	for len(p) > 0 && r.n > 0 {
		c := copy(p, r.line[r.off:])
		p, total, r.off = p[c:], total+c, r.off+c
		if r.off == len(r.line) {
			r.off, r.n = 0, r.n-1
		}
	}
	return total, nil
}

func heapAfterGC() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A million identical lines: the decoder keeps one counter for them and
// nothing of the input, so the live heap stays flat.
func TestDecoderMillionLinesFlatMemory(t *testing.T) {
	n := 1_000_000
	if testing.Short() || raceEnabled {
		n = 100_000
	}
	line := []byte(`{"method":"POST","url":"https://api.example.com/v1/items","headers":{"Content-Type":"application/json"},"data":{"name":"x","qty":3}}` + "\n")
	before := heapAfterGC()
	d := NewDecoder(&repeatReader{line: line, n: n}, "big.jsonl")
	count := 0
	var last *Job
	for {
		j, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		count++
		last = j
	}
	grown := int64(heapAfterGC()) - int64(before)
	if count != n {
		t.Fatalf("decoded %d jobs, want %d", count, n)
	}
	if !strings.HasSuffix(last.ID, fmt.Sprintf("-%d", n)) {
		t.Errorf("last id %q, want suffix -%d", last.ID, n)
	}
	// The input is ~130 MB for a million lines; the decoder's read buffer
	// is 64 KiB.
	if grown > 4<<20 {
		t.Errorf("live heap grew by %d bytes after %d lines", grown, n)
	}
	runtime.KeepAlive(d)
}

// An over-long line or element is skipped without being held: what the
// decoder allocates does not grow with its length.
func TestDecoderLongEntryNotBuffered(t *testing.T) {
	const size = 64 << 20
	for _, tc := range []struct {
		name, head, tail string
		line             int
	}{
		{"line", `{"url":"http://a/"}` + "\n" + `{"url":"http://b/","data":"`, `"}` + "\n" + `{"url":"http://c/"}`, 2},
		{"element", `[{"url":"http://a/"},` + "\n" + `{"url":"http://b/","data":"`, `"},` + "\n" + `{"url":"http://c/"}]`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := io.MultiReader(strings.NewReader(tc.head), &repeatReader{line: bytes.Repeat([]byte("x"), 4096), n: size / 4096}, strings.NewReader(tc.tail))
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			jobs, errs := decodeAll(t, "f", r)
			runtime.ReadMemStats(&m1)
			if len(jobs) != 2 || len(errs) != 1 || errs[0].Line != tc.line || !strings.Contains(errs[0].Error(), "longer than the limit") {
				t.Fatalf("jobs %s errs %v", idList(jobs), errs)
			}
			if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 8<<20 {
				t.Errorf("allocated %d bytes for a %d-byte entry", alloc, size)
			}
		})
	}
}

func TestDecoderLongLineWithinLimit(t *testing.T) {
	// Longer than the read buffer, shorter than the limit: assembled and
	// decoded, CRLF and all.
	data := strings.Repeat("y", 3*readBufferSize)
	in := `{"url":"http://a/","data":"` + data + `"}` + "\r\n" + `{"url":"http://b/"}`
	jobs, errs := decodeString(t, "f", in)
	if len(errs) != 0 || len(jobs) != 2 || string(jobs[0].Data) != `"`+data+`"` {
		t.Fatalf("jobs %d errs %v", len(jobs), errs)
	}

	// Exactly at the limit is allowed; one byte over is not.
	pad := MaxLineBytes - len(`{"url":"http://a/","data":""}`)
	exact := `{"url":"http://a/","data":"` + strings.Repeat("z", pad) + `"}`
	if jobs, errs := decodeString(t, "f", exact+"\r\n"+exact[:len(exact)-2]+`z"}`); len(jobs) != 1 || len(errs) != 1 || errs[0].Line != 2 {
		t.Fatalf("at the limit: jobs %d errs %v", len(jobs), errs)
	}
}

func TestIDsNotReused(t *testing.T) {
	// Explicit ids of the derived shape that never collide are fine.
	in := `{"id":"h-00000000000000000000","url":"http://a/"}` + "\n" +
		`{"id":"h-b1e84d21dec243147d29-1","url":"http://a/"}` + "\n" +
		`{"id":"h-B1E84D21DEC243147D29","url":"http://a/"}` + "\n" +
		`{"url":"http://a/"}` + "\n" +
		`{"id":"h-b1e84d21dec243147d29-3","url":"http://a/"}` + "\n" +
		`{"url":"http://a/"}` + "\n" +
		`{"url":"http://a/"}`
	jobs, errs := decodeString(t, "f.jsonl", in)
	if len(errs) != 1 || errs[0].Line != 7 || !strings.Contains(errs[0].Error(), `derived id "h-b1e84d21dec243147d29-3" is already the explicit id of line 5`) {
		t.Fatalf("errs %v", errs)
	}
	seen := map[string]bool{}
	for _, j := range jobs {
		if seen[j.ID] {
			t.Errorf("id %q handed out twice", j.ID)
		}
		seen[j.ID] = true
	}
	if len(jobs) != 6 {
		t.Errorf("jobs %s", idList(jobs))
	}
}

func TestParseDerived(t *testing.T) {
	k, err := deriveKey([]byte(`{"url":"http://a/"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []uint32{1, 2, 10, 4294967295} {
		gk, gn, ok := parseDerived(formatDerived(k, n))
		if !ok || gk != k || gn != n {
			t.Errorf("parseDerived(formatDerived(k, %d)) = %x %d %v", n, gk, gn, ok)
		}
	}
	for _, id := range []string{"", "h-", "x-b1e84d21dec243147d29", "h-7d0a91bdef7de0c0ad2", "h-7d0a91bdef7de0c0ad2g",
		"h-b1e84d21dec243147d29-", "h-b1e84d21dec243147d29-1", "h-b1e84d21dec243147d29-0", "h-b1e84d21dec243147d29-02",
		"h-b1e84d21dec243147d29-+2", "h-b1e84d21dec243147d29-4294967296", "h-b1e84d21dec243147d29x", "h-B1E84D21DEC243147D29"} {
		if _, _, ok := parseDerived(id); ok {
			t.Errorf("parseDerived(%q) accepted", id)
		}
	}
}

func TestFieldHint(t *testing.T) {
	for name, want := range map[string]string{
		"headres":  `did you mean "headers"?`,
		"Headers":  `did you mean "headers"?`,
		"replyto":  `did you mean "reply_to"?`,
		"reply-to": `did you mean "reply_to"?`,
		"timout":   `did you mean "timeout"?`,
		"uri":      `did you mean "url"?`,
		"body":     `a body is "data" (text, or an object sent as a form) or "json"`,
		"cookies":  `aiohttp's cookies= is not a job field; set a "Cookie" header in "headers" ("name=value; other=value")`,
		"param":    `did you mean "params"?`,
		"jsn":      `did you mean "json"?`,
		"x":        "",
	} {
		if got := fieldHint(name); got != want {
			t.Errorf("fieldHint(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestLongValuesShortenedInErrors(t *testing.T) {
	long := strings.Repeat("a", 5000)
	for _, in := range []string{
		`{"url":"http://a/","reply_to":"` + long + `.*"}`,
		`{"url":"http://a/","method":"` + long + ` x"}`,
		`{"url":"http://a/","headers":{"` + long + ` x":"1"}}`,
		`{"url":"http://a/","timeout":-0.` + long + `1}`,
		`{"url":"http://a/","timeout":"` + long + `"}`,
		`{"url":"http://` + long + ` x/"}`,
	} {
		_, errs := decodeString(t, "f", in)
		if len(errs) != 1 || len(errs[0].Error()) > 300 {
			t.Errorf("errs %.400v", errs)
		}
	}
}

func TestQuoteShortensLongKeys(t *testing.T) {
	key := strings.Repeat("é", 100)
	_, errs := decodeString(t, "f", `{"url":"http://a/","`+key+`":1}`)
	if len(errs) != 1 || len(errs[0].Error()) > 200 || !strings.Contains(errs[0].Error(), "…") {
		t.Fatalf("errs %v", errs)
	}
}

// deriveID is the id the Decoder gives an entry without "id" that is the
// first of its kind in a file; tests pin the canonical form through it.
func deriveID(entry []byte) (string, error) {
	k, err := deriveKey(entry)
	if err != nil {
		return "", err
	}
	return formatDerived(k, 1), nil
}

func deriveKey(entry []byte) (contentKey, error) {
	dec := json.NewDecoder(bytes.NewReader(entry))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return contentKey{}, fmt.Errorf("deriving id: %w", err)
	}
	return canonicalKey(v)
}
