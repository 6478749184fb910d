package job

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestBody(t *testing.T) {
	tests := []struct {
		name     string
		data     string // raw JSON; "" for absent
		json     string // raw JSON; "" for absent
		wantBody string
		wantNil  bool
		wantType string
	}{
		{name: "absent", wantNil: true},
		{name: "null", data: "null", json: "null", wantNil: true},
		{name: "string sent as is", data: `"a=1&b=2"`, wantBody: "a=1&b=2", wantType: TypeText},
		{name: "string escapes decoded", data: `"line1\nline2 \u00e9 \"q\""`, wantBody: "line1\nline2 é \"q\"", wantType: TypeText},
		{name: "empty string", data: `""`, wantBody: "", wantType: TypeText},
		{name: "object form-encoded", data: `{"b":1, "a":["x y","&"]}`, wantBody: "b=1&a=x+y&a=%26", wantType: TypeForm},
		{name: "empty object", data: `{}`, wantBody: "", wantType: TypeForm},
		{name: "json object as written", json: `{"b":1, "a":[true,null]}`, wantBody: `{"b":1, "a":[true,null]}`, wantType: TypeJSON},
		{name: "json array", json: `[1,2]`, wantBody: `[1,2]`, wantType: TypeJSON},
		{name: "json number", json: `12.50`, wantBody: `12.50`, wantType: TypeJSON},
		{name: "json boolean", json: `false`, wantBody: `false`, wantType: TypeJSON},
		{name: "json string is a JSON body", json: `"<a>"`, wantBody: `"<a>"`, wantType: TypeJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := &Job{}
			if tt.data != "" {
				j.Data = json.RawMessage(tt.data)
			}
			if tt.json != "" {
				j.JSON = json.RawMessage(tt.json)
			}
			body, ct := j.Body()
			if tt.wantNil {
				if body != nil || ct != "" {
					t.Fatalf("Body() = %q, %q; want nil, \"\"", body, ct)
				}
				return
			}
			if string(body) != tt.wantBody || ct != tt.wantType {
				t.Errorf("Body() = %q, %q; want %q, %q", body, ct, tt.wantBody, tt.wantType)
			}
		})
	}
}

// What a file says about data and json is what Body sends.
func TestBodyFromDecoder(t *testing.T) {
	in := `{"url":"http://a/","data":"k=v"}` + "\n" +
		`{"url":"http://a/","data":{"z":1,"a":"<tag>"}}` + "\n" +
		`{"url":"http://a/","json":{"z":1,"a":"<tag>"}}` + "\n" +
		`{"url":"http://a/","data":null}` + "\n" +
		`{"url":"http://a/"}`
	jobs, errs := decodeString(t, "f", in)
	if len(errs) != 0 || len(jobs) != 5 {
		t.Fatalf("jobs %d errs %v", len(jobs), errs)
	}
	want := []struct{ body, ct string }{
		{"k=v", TypeText},
		{"z=1&a=%3Ctag%3E", TypeForm},
		{`{"z":1,"a":"<tag>"}`, TypeJSON},
		{"", ""},
		{"", ""},
	}
	for i, w := range want {
		body, ct := jobs[i].Body()
		if string(body) != w.body || ct != w.ct {
			t.Errorf("line %d: Body() = %q, %q; want %q, %q", i+1, body, ct, w.body, w.ct)
		}
		if w.body == "" && body != nil {
			t.Errorf("line %d: want a nil body", i+1)
		}
	}
}

func TestValidateControlCharacters(t *testing.T) {
	base := func() *Job { return &Job{ID: "a", Method: "GET", URL: "http://a/"} }
	tests := []struct {
		name string
		edit func(*Job)
		want string // "" for valid
	}{
		{"tab in header value", func(j *Job) { j.Headers = map[string]string{"X": "a\tb"} }, ""},
		{"non-ASCII header value", func(j *Job) { j.Headers = map[string]string{"X": "é"} }, ""},
		{"SOH in header value", func(j *Job) { j.Headers = map[string]string{"X": "a\x01b"} }, `header "X" has a control character`},
		{"DEL in header value", func(j *Job) { j.Headers = map[string]string{"X": "a\x7f"} }, `header "X" has a control character`},
		{"CR in id", func(j *Job) { j.ID = "a\rb" }, "control character"},
		{"escape in id", func(j *Job) { j.ID = "\x1b[2J" }, "control character"},
		{"invalid UTF-8 id", func(j *Job) { j.ID = "a\xffb" }, "invalid UTF-8"},
		{"unicode id", func(j *Job) { j.ID = "заказ-1" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := base()
			tt.edit(j)
			err := j.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	for in, want := range map[string]time.Duration{
		`"30s"`:  30 * time.Second,
		`"1m5s"`: 65 * time.Second,
		`30`:     30 * time.Second,
		`0.25`:   250 * time.Millisecond,
		`0`:      0,
	} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || time.Duration(d) != want {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}
	for _, in := range []string{`"soon"`, `-1`, `86401`, `true`, `{}`} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("Unmarshal(%s) accepted: %v", in, time.Duration(d))
		}
	}
	// null leaves the value alone, as encoding/json does for its own types.
	d := Duration(time.Second)
	if err := json.Unmarshal([]byte(`null`), &d); err != nil || d != Duration(time.Second) {
		t.Errorf("Unmarshal(null) = %v, %v", time.Duration(d), err)
	}
	out, err := json.Marshal(Duration(90 * time.Second))
	if err != nil || string(out) != `"1m30s"` {
		t.Errorf("Marshal = %s, %v", out, err)
	}
}

func TestJobWireRoundTrip(t *testing.T) {
	j := benchJob()
	b, err := Encode(j)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, j) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, j)
	}

	j.Batch = "no spaces allowed"
	b, _ = Encode(j)
	if _, err := Decode(b); err == nil || !strings.Contains(err.Error(), "not a valid batch id") {
		t.Errorf("Decode with a bad batch = %v", err)
	}
}

func TestResultRoundTrip(t *testing.T) {
	r := &Result{
		ID: "x", Batch: "b", OK: false, Status: 503, Attempts: 5, Error: "503 Service Unavailable",
		Reason: ReasonExhausted, Body: "busy\x00\n", BodyTruncated: true, DurationMS: 30001, Worker: "w1",
		FinishedAt: time.Date(2025, 11, 27, 10, 47, 3, 5, time.UTC),
		Callback:   &CallbackResult{OK: false, Status: 0, Error: "dial tcp: refused"},
	}
	b, err := EncodeResult(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeResult(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
	}
	// The contract's field names.
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "batch", "ok", "status", "attempts", "error", "body", "body_truncated", "duration_ms", "worker", "finished_at"} {
		if _, ok := m[k]; !ok {
			t.Errorf("result JSON has no %q: %s", k, b)
		}
	}
}

func TestRedaction(t *testing.T) {
	h := RedactHeaders(map[string]string{"authorization": "Bearer x", "X-Api-Key": "k", "Accept": "a", "Set-Cookie": "c"}, []string{"x-api-key"})
	if h["authorization"] != Redacted || h["X-Api-Key"] != Redacted || h["Set-Cookie"] != Redacted || h["Accept"] != "a" {
		t.Errorf("redacted headers: %v", h)
	}
	for in, want := range map[string]string{
		"http://user:pw@h/x?q=1": "http://REDACTED@h/x?q=1",
		"https://tok@h/":         "https://REDACTED@h/",
		"https://h/p":            "https://h/p",
		"":                       "",
		// Secret query parameters, whatever their case or separators;
		// the others keep their order and encoding.
		"https://h/x?b=2&api_key=s3cr3t&a=%20x":        "https://h/x?b=2&api_key=REDACTED&a=%20x",
		"https://h/x?X-Amz-Signature=abc&X-Amz-Date=1": "https://h/x?X-Amz-Signature=REDACTED&X-Amz-Date=1",
		"https://h/x?access%5Ftoken=t&token=u&page=2":  "https://h/x?access%5Ftoken=REDACTED&token=REDACTED&page=2",
		"https://u:p@h/x?sig=1&keyword=go":             "https://REDACTED@h/x?sig=REDACTED&keyword=go",
		"https://h/x?apiKey":                           "https://h/x?apiKey",
		"https://h/cb?code=oauth-code&state=s#frag":    "https://h/cb?code=REDACTED&state=s#frag",
		// Families of names, ";" separators, fragments (OAuth implicit).
		"https://h/x?private_token=a;page=1&secret_key=b": "https://h/x?private_token=REDACTED;page=1&secret_key=REDACTED",
		"https://h/cb#access_token=t&expires_in=3600":     "https://h/cb#access_token=REDACTED&expires_in=3600",
		"https://h/x?monkey=1&keys=2":                     "https://h/x?monkey=REDACTED&keys=2",
		// URLs that do not parse are redacted as text.
		"https://u:p@h/%zz?token=abc":           "https://REDACTED@h/%zz?token=REDACTED",
		"https://u:p@h:99999x/?token=abc#sig=1": "https://REDACTED@h:99999x/?token=REDACTED#sig=REDACTED",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// A result too long for the broker loses the end of its body, never more,
// and says so; a result that fits is left alone.
func TestEncodeResultWithin(t *testing.T) {
	bodies := map[string]string{
		"ascii":     strings.Repeat("a", 5000),
		"multibyte": strings.Repeat("é€", 1000),
		"escaped":   strings.Repeat(`<&>"`, 1000), // several bytes each, encoded
		"invalid":   strings.Repeat("\xff\x80", 1000),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			r := &Result{ID: "j1", Batch: "b", Status: 502, Error: "bad gateway", Body: body}
			full, err := EncodeResult(r)
			if err != nil {
				t.Fatal(err)
			}
			bare, _ := EncodeResult(&Result{ID: "j1", Batch: "b", Status: 502, Error: "bad gateway", BodyTruncated: true})
			for _, limit := range []int{len(full), len(full) - 1, len(full) / 2, len(bare) + 10} {
				data, err := EncodeResultWithin(r, limit)
				if err != nil {
					t.Fatalf("limit %d: %v", limit, err)
				}
				if len(data) > limit {
					t.Fatalf("limit %d: encoded %d bytes", limit, len(data))
				}
				got, err := DecodeResult(data)
				if err != nil {
					t.Fatal(err)
				}
				if limit == len(full) {
					if got.Body != r.Body && name != "invalid" || got.BodyTruncated {
						t.Errorf("limit %d: a result that fits was changed", limit)
					}
					continue
				}
				if !got.BodyTruncated {
					t.Errorf("limit %d: body cut, not marked truncated", limit)
				}
				// Invalid UTF-8 comes back as U+FFFD, so only valid text can
				// be compared.
				if name != "invalid" && (len(got.Body) >= len(r.Body) || !strings.HasPrefix(r.Body, got.Body)) {
					t.Errorf("limit %d: body of %d bytes is not a shorter start of the original", limit, len(got.Body))
				}
				if name == "invalid" {
					continue
				}
				longer := Cut(r.Body, len(got.Body)+4)
				more, _ := EncodeResult(&Result{ID: "j1", Batch: "b", Status: 502, Error: "bad gateway", BodyTruncated: true, Body: longer})
				if len(longer) > len(got.Body) && len(longer) < len(r.Body) && len(more) <= limit {
					t.Errorf("limit %d: kept %d bytes of body where %d fit", limit, len(got.Body), len(longer))
				}
				if limit >= len(full)/2 && got.Body == "" {
					t.Errorf("limit %d: the whole body was dropped where half the record fits", limit)
				}
			}
			if r.Body != body || r.BodyTruncated {
				t.Error("the caller's result was changed")
			}
			if _, err := EncodeResultWithin(r, len(bare)-1); err == nil {
				t.Error("a limit below the record without its body: no error")
			}
		})
	}
}

func TestHostKey(t *testing.T) {
	for raw, want := range map[string]string{
		"http://API.example.com/x":     "api.example.com:80",
		"https://api.example.com/x":    "api.example.com:443",
		"HTTPS://api.example.com/x":    "api.example.com:443",
		"https://api.example.com:443/": "api.example.com:443",
		"http://a.b:8080":              "a.b:8080",
		"http://[2001:DB8::1]:81/":     "[2001:db8::1]:81",
		"http://[2001:db8::1]/":        "[2001:db8::1]:80",
	} {
		if got := (&Job{URL: raw}).Host(); got != want {
			t.Errorf("Host of %s = %q, want %q", raw, got, want)
		}
	}
}

// A per-batch rate slower than the limiters can keep (a job published
// straight onto the jobs subject can carry any number) is refused, not
// turned into no limit or a day's pace without a word.
func TestValidateRateBounds(t *testing.T) {
	for rate, ok := range map[float64]bool{0: true, MinRate: true, 0.5: true, MaxRate: true, 1e-11: false, MinRate / 2: false, -1: false, MaxRate * 2: false} {
		j := &Job{ID: "1", Method: "GET", URL: "https://a.example/", Rate: rate}
		if err := j.Validate(); (err == nil) != ok {
			t.Errorf("rate %v: Validate() = %v, want ok=%v", rate, err, ok)
		}
	}
}
