package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jetpost/jetpost/internal/natstest"
)

// received is what a target saw of one request, byte for byte.
type received struct{ method, uri, ctype, body string }

// recordingServer keeps the last request seen per path.
func recordingServer(t *testing.T) (url string, seen func(path string) (received, bool)) {
	t.Helper()
	var mu sync.Mutex
	got := map[string]received{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.URL.Path] = received{r.Method, r.RequestURI, r.Header.Get("Content-Type"), string(body)}
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func(path string) (received, bool) {
		mu.Lock()
		defer mu.Unlock()
		r, ok := got[path]
		return r, ok
	}
}

// Issue 16, section 2, with the real binaries: items written with
// aiohttp's fields (data=, json=, params=, headers=) reach the target as
// aiohttp would send them: method, path and query, Content-Type and body,
// byte for byte. The file is a pretty-printed JSON array, so a json body
// spans lines, and it keeps its indentation and escapes.
func TestAiohttpFieldsReachTheTargetByteForByte(t *testing.T) {
	ns := natstest.RunServer(t)
	url, seen := recordingServer(t)
	signed := "{\n      \"sig\": \"<&>\",  \"n\" : 1.50,\n      \"u\": \"\\u00e9\\/\"\n    }"
	items := []struct{ line, path string }{
		{`{"method": "POST", "url": "URL/text", "data": "h\u00e9llo a=1&b"}`, "/text"},
		{`{"method": "POST", "url": "URL/csv", "headers": {"content-type": "text/csv"}, "data": "a,b\n1,2"}`, "/csv"},
		{`{"method": "POST", "url": "URL/form", "data": {"user": "ann", "scope": ["read", "write"], "n": 1e3, "f": 2.50, "sp": "a b&c=d/é"}}`, "/form"},
		{`{"method": "POST", "url": "URL/signed", "json": ` + signed + `}`, "/signed"},
		{`{"method": "POST", "url": "URL/jsonstr", "json": "<b>"}`, "/jsonstr"},
		{`{"method": "PATCH", "url": "URL/vnd", "headers": {"Content-Type": "application/vnd.api+json"}, "json": {"a": [1, 2]}}`, "/vnd"},
		{`{"url": "URL/search?lang=en&x=%7e", "params": {"q": "jet post", "page": 2, "tag": ["a", "b"], "p": "/?:@!$'()*,+;"}}`, "/search"},
		{`{"method": "PUT", "url": "URL/both?v=1&", "params": {"dry": "1"}, "data": {"k": "v"}}`, "/both"},
	}
	want := map[string]received{
		"/text":    {"POST", "/text", "text/plain; charset=utf-8", "héllo a=1&b"},
		"/csv":     {"POST", "/csv", "text/csv", "a,b\n1,2"},
		"/form":    {"POST", "/form", "application/x-www-form-urlencoded", "user=ann&scope=read&scope=write&n=1000.0&f=2.5&sp=a+b%26c%3Dd%2F%C3%A9"},
		"/signed":  {"POST", "/signed", "application/json", signed},
		"/jsonstr": {"POST", "/jsonstr", "application/json", `"<b>"`},
		"/vnd":     {"PATCH", "/vnd", "application/vnd.api+json", `{"a": [1, 2]}`},
		"/search":  {"GET", "/search?lang=en&x=%7e&q=jet+post&page=2&tag=a&tag=b&p=/?:@!$'()*,%2B%3B", "", ""},
		"/both":    {"PUT", "/both?v=1&dry=1", "application/x-www-form-urlencoded", "k=v"},
	}
	var b strings.Builder
	b.WriteString("[\n")
	for i, it := range items {
		if i > 0 {
			b.WriteString(",\n")
		}
		b.WriteString("  " + strings.ReplaceAll(it.line, "URL", url))
	}
	b.WriteString("\n]\n")
	dir := t.TempDir()
	file, out := filepath.Join(dir, "seed.json"), filepath.Join(dir, "out.jsonl")
	writeFile(t, file, b.String())

	start(t, "worker", workerEnv(ns.ClientURL())) // stopped at cleanup
	if code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), "--wait", "--out", out, file); code != 0 {
		t.Fatalf("enqueue: exit %d: %s", code, stderr)
	}
	results := readResults(t, out)
	if len(results) != len(items) {
		t.Errorf("%d results, want %d", len(results), len(items))
	}
	for _, r := range results {
		if !r.OK {
			t.Errorf("result %+v", r)
		}
	}
	for path, w := range want {
		got, ok := seen(path)
		if !ok || got != w {
			t.Errorf("%s: target got\n %q\nwant\n %q", path, got, w)
		}
	}
	// The result names the URL as sent, params included.
	var both int
	for _, r := range results {
		if strings.Contains(r.URL, "/both") {
			both++
			if r.URL != url+"/both?v=1&dry=1" {
				t.Errorf("result url %s, want the URL as sent", r.URL)
			}
		}
	}
	if both != 1 {
		t.Errorf("%d results for /both, want 1", both)
	}
}

// Issue 16, section 3: the common mistakes get one clear message each from
// the real enqueue, and nothing is published.
func TestEnqueueNamesCommonMistakes(t *testing.T) {
	ns := natstest.RunServer(t)
	dir := t.TempDir()
	files := []struct{ name, content, want string }{
		{"orders.csv", "id,method,url\n1,GET,http://a.example/\n2,GET,http://b.example/\n", "orders.csv:1: this looks like CSV; jetpost reads JSON Lines"},
		{"both.jsonl", `{"url":"http://a.example/","data":"x","json":{"x":1}}` + "\n", "both.jsonl:1: data and json are both set"},
		{"bool.jsonl", `{"url":"http://a.example/","data":{"gift":false}}` + "\n", `bool.jsonl:1: data: "gift" is a boolean`},
		{"scheme.jsonl", `{"url":"api.example.com/v1"}` + "\n", `scheme.jsonl:1: url "api.example.com/v1" has no scheme: write "https://api.example.com/v1" (or "http://api.example.com/v1")`},
		{"kw.jsonl", `{"url":"http://a.example/","auth":["u","p"]}` + "\n", `kw.jsonl:1: unknown field "auth" (aiohttp's auth= is not a job field; set an "Authorization" header in "headers"`},
	}
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		writeFile(t, path, f.content)
		code, _, stderr := runEnqueue(t, nil, "--nats", ns.ClientURL(), path)
		if code != 2 || !strings.Contains(stderr, f.want) || strings.Count(stderr, f.name+":") != 1 {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 2 and one message with %q", f.name, code, stderr, f.want)
		}
	}
}
