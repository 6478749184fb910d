package job

import (
	"encoding/json"
	"strings"
	"testing"
)

// The expected spellings are Python's: str(json.loads(n)) (what
// urlencode and yarl write for a number).
func TestPyNumber(t *testing.T) {
	for in, want := range map[string]string{
		"7": "7", "-0": "0", "12345678901234567890123": "12345678901234567890123",
		"1.0": "1.0", "1e3": "1000.0", "1.5": "1.5", "1e16": "1e+16", "1e15": "1000000000000000.0",
		"0.0001": "0.0001", "0.00001": "1e-05", "-0.0": "-0.0", "1.5e20": "1.5e+20",
		"123456789.123456789": "123456789.12345679", "1e100": "1e+100", "2.5e-7": "2.5e-07",
		"0.1": "0.1", "100.0": "100.0", "1e-4": "0.0001", "12345678901234567.0": "1.2345678901234568e+16",
		"-1.25": "-1.25", "2.50": "2.5",
	} {
		if got, err := pyNumber(in); err != nil || got != want {
			t.Errorf("pyNumber(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, err := pyNumber("1e400"); err == nil {
		t.Errorf("pyNumber(1e400) = %q, want an error (Python reads inf, which neither aiohttp path sends)", got)
	}
}

// The expected form is Python's urllib.parse.urlencode(pairs, doseq=True),
// which aiohttp's FormData uses for a dict without files.
func TestFormEncoding(t *testing.T) {
	j := &Job{Data: json.RawMessage(`{"a b": "x&y=z+w/\u00e9~!*'()$,?:@;#%", "n": [1, 2.50, "é"], "none": [], "e": ""}`)}
	body, ct := j.Body()
	const want = "a+b=x%26y%3Dz%2Bw%2F%C3%A9~%21%2A%27%28%29%24%2C%3F%3A%40%3B%23%25&n=1&n=2.5&n=%C3%A9&e="
	if string(body) != want || ct != TypeForm {
		t.Errorf("Body() = %q, %q; want %q, %q", body, ct, want, TypeForm)
	}
}

// params go through yarl's query quoting and URL.extend_query: the query
// written in the URL is kept as it is, the pairs follow, a fragment stays
// last.
func TestRequestURL(t *testing.T) {
	tests := []struct{ url, params, want string }{
		{"http://a/p", ``, "http://a/p"},
		{"http://a/p", `{}`, "http://a/p"},
		{"http://a/p", `{"x": []}`, "http://a/p"},
		{"http://a/p", `{"q": "v", "n": 3}`, "http://a/p?q=v&n=3"},
		{"http://a/p?z=%7e&b", `{"q": "v"}`, "http://a/p?z=%7e&b&q=v"},
		{"http://a/p?z=1&", `{"q": "v"}`, "http://a/p?z=1&q=v"},
		{"http://a/p?", `{"q": "v"}`, "http://a/p?q=v"},
		{"http://a/p?z=1#frag", `{"q": "v"}`, "http://a/p?z=1&q=v#frag"},
		{"http://a/p", `{"tag": ["x", "y"], "f": 0.5}`, "http://a/p?tag=x&tag=y&f=0.5"},
		{"http://a/p", `{"s p": "a b/?:@!$'()*,&=+;#%é"}`, "http://a/p?s+p=a+b/?:@!$'()*,%26%3D%2B%3B%23%25%C3%A9"},
	}
	for _, tt := range tests {
		j := &Job{URL: tt.url}
		if tt.params != "" {
			j.Params = json.RawMessage(tt.params)
		}
		if got := j.RequestURL(); got != tt.want {
			t.Errorf("URL %s params %s: RequestURL() = %s, want %s", tt.url, tt.params, got, tt.want)
		}
	}
}

// What aiohttp would send otherwise than it reads (Python spellings) or
// refuse, jetpost refuses at FILE:LINE with what to write instead.
func TestBodyFieldsRefused(t *testing.T) {
	const u = `"url":"http://a/"`
	tests := []struct{ line, want string }{
		{`{` + u + `,"data":"x","json":{"a":1}}`, "data and json are both set"},
		{`{` + u + `,"data":[1,2]}`, `data: must be a string (sent as is) or an object (form-encoded, as aiohttp does), got an array; for a JSON body use "json"`},
		{`{` + u + `,"data":12.5}`, "got a number"},
		{`{` + u + `,"data":true}`, "got a boolean"},
		{`{` + u + `,"data":{"gift":false}}`, `data: "gift" is a boolean, which aiohttp would send as Python spells it ("True"); write the string the server expects, e.g. "true"; to send this object as a JSON body, name it "json" instead of "data"`},
		{`{` + u + `,"data":{"a":null}}`, `data: "a" is null`},
		{`{` + u + `,"data":{"a":{"b":1}}}`, `data: "a" is an object; values are strings, numbers or a list of them`},
		{`{` + u + `,"data":{"a":[[1]]}}`, `data: "a" is an array inside an array`},
		{`{` + u + `,"data":{"a":1,"a":2}}`, `data: "a" is given twice; for a repeated name give a list, {"a": ["a", "b"]}`},
		{`{` + u + `,"data":{"a":1e400}}`, `data: "a": number 1e400 is beyond a 64-bit float`},
		{`{` + u + `,"params":["a","b"]}`, "params: must be an object of query parameters, got an array"},
		{`{` + u + `,"params":"a=1"}`, "params: must be an object of query parameters, got a string"},
		{`{` + u + `,"params":{"on":true}}`, `params: "on" is a boolean`},
		{`{` + u + `,"params":{"p":1,"p":2}}`, `params: "p" is given twice`},
		{`{` + u + `,"params":{"p":"` + strings.Repeat("é", MaxURLLen/6) + `"}}`, "url with params is 8202 bytes, limit 8192"},
	}
	for _, tt := range tests {
		_, errs := decodeString(t, "in.jsonl", tt.line)
		if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "in.jsonl:1: ") || !strings.Contains(errs[0].Error(), tt.want) {
			t.Errorf("%s: errors %v, want one in.jsonl:1 error with %q", tt.line, errs, tt.want)
		}
	}
}

// A message published by hand is held to the same rules as a file line.
func TestDecodeRefusesBothBodies(t *testing.T) {
	msg := `{"id":"a","batch":"b","method":"POST","url":"http://a/","data":"x","json":[1],"enqueued_at":"2026-01-01T00:00:00Z"}`
	if _, err := Decode([]byte(msg)); err == nil || !strings.Contains(err.Error(), "data and json are both set") {
		t.Fatalf("Decode = %v", err)
	}
}

// The wire carries data, json and params as the file wrote them, and the
// worker's side (Decode, then Body and RequestURL) sends what the file
// said.
func TestBodyFieldsOnTheWire(t *testing.T) {
	in := `{"url":"http://a/p?x=1","params":{"b": [2, "<"],  "a":"é"},"json": {"z" : "<&>", "a":[1.50]}}` + "\n" +
		`{"url":"http://a/","data":{"k":"v w","n":1e3}}`
	jobs, errs := decodeString(t, "f", in)
	if len(errs) != 0 || len(jobs) != 2 {
		t.Fatalf("jobs %d errs %v", len(jobs), errs)
	}
	want := []struct{ url, body, ct, wire string }{
		{"http://a/p?x=1&b=2&b=%3C&a=%C3%A9", `{"z" : "<&>", "a":[1.50]}`, TypeJSON, `"json":{"z" : "<&>", "a":[1.50]},"params":{"b": [2, "<"],  "a":"é"}`},
		{"http://a/", "k=v+w&n=1000.0", TypeForm, `"data":{"k":"v w","n":1e3}`},
	}
	for i, w := range want {
		j := jobs[i]
		j.Batch = "b"
		wire, err := Encode(j)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(wire), w.wire) {
			t.Errorf("line %d: wire %s does not carry %s", i+1, wire, w.wire)
		}
		got, err := Decode(wire)
		if err != nil {
			t.Fatal(err)
		}
		body, ct := got.Body()
		if u := got.RequestURL(); u != w.url || string(body) != w.body || ct != w.ct {
			t.Errorf("line %d: sends %s %q (%s), want %s %q (%s)", i+1, u, body, ct, w.url, w.body, w.ct)
		}
	}
}

// The fingerprint is of the request as sent: params written in the URL or
// as "params" are one request; another value is another.
func TestFingerprintOfMergedURL(t *testing.T) {
	inURL := &Job{Method: "GET", URL: "http://a/p?q=v&n=3"}
	inParams := &Job{Method: "GET", URL: "http://a/p", Params: json.RawMessage(`{"q":"v","n":3}`)}
	other := &Job{Method: "GET", URL: "http://a/p", Params: json.RawMessage(`{"q":"w","n":3}`)}
	if inURL.Fingerprint(nil, nil) != inParams.Fingerprint(nil, nil) {
		t.Error("the same URL spelt with params has another fingerprint")
	}
	if other.Fingerprint(nil, nil) == inParams.Fingerprint(nil, nil) {
		t.Error("another params value has the same fingerprint")
	}
	form := &Job{Method: "POST", URL: "http://a/", Data: json.RawMessage(`{"a":"1"}`)}
	asJSON := &Job{Method: "POST", URL: "http://a/", JSON: json.RawMessage(`{"a":"1"}`)}
	if form.Fingerprint(nil, nil) == asJSON.Fingerprint(nil, nil) {
		t.Error("a form and a JSON body of the same object have one fingerprint")
	}
	key := []byte("0123456789abcdef")
	k1 := &Job{Method: "GET", URL: "http://a/", Params: json.RawMessage(`{"api_key":"one"}`)}
	k2 := &Job{Method: "GET", URL: "http://a/", Params: json.RawMessage(`{"api_key":"two"}`)}
	if k1.Fingerprint(nil, nil) != k2.Fingerprint(nil, nil) || k1.Fingerprint(nil, key) == k2.Fingerprint(nil, key) {
		t.Error("a secret in params is not treated as one in the URL")
	}
}

// A derived id does not hash a secret param's value: a rotated key is the
// same line.
func TestDerivedIDRedactsSecretParams(t *testing.T) {
	jobs, errs := decodeString(t, "f", `{"url":"http://a/","params":{"api_key":"one","q":"x"}}`+"\n"+
		`{"url":"http://a/","params":{"api_key":"two","q":"x"}}`+"\n"+
		`{"url":"http://a/","params":{"api_key":"two","q":"y"}}`)
	if len(errs) != 0 || len(jobs) != 3 {
		t.Fatalf("jobs %d errs %v", len(jobs), errs)
	}
	if jobs[1].ID != jobs[0].ID+"-2" {
		t.Errorf("ids %q and %q: the api_key value entered the derived id", jobs[0].ID, jobs[1].ID)
	}
	if strings.HasPrefix(jobs[2].ID, jobs[0].ID) {
		t.Errorf("ids %q and %q: another q is the same line", jobs[0].ID, jobs[2].ID)
	}
}

func TestRedactParams(t *testing.T) {
	for in, want := range map[string]string{
		`{"q": "x", "api_key": "s3cret", "token": ["a"]}`: `{"api_key":"REDACTED","q":"x","token":"REDACTED"}`,
		`{"q": "x"}`: `{"q": "x"}`,
		`null`:       `null`,
		`[1]`:        `[1]`,
	} {
		if got := string(RedactParams(json.RawMessage(in))); got != want {
			t.Errorf("RedactParams(%s) = %s, want %s", in, got, want)
		}
	}
}
