package sender

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/pkg/job"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// loopback is what every test but the guard tests allows: httptest servers
// listen on 127.0.0.1, which the guard refuses by default.
func loopback() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }

func newSender(t testing.TB, cfg Config) *Sender {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// serve starts a real HTTP server and counts the requests it receives.
func serve(t testing.TB, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// safetyNet bounds a test that would otherwise hang if the code under test
// lost its own timeout; it is far longer than anything a passing test waits,
// even on a loaded machine, since some tests poll until it ends.
func safetyNet(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newJob(url string) *job.Job {
	return &job.Job{ID: "job-1", Batch: "b", Method: http.MethodGet, URL: url}
}

func TestClassification(t *testing.T) {
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/status/200", http.StatusMovedPermanently)
			return
		}
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		w.WriteHeader(code)
		if code != http.StatusNoContent {
			fmt.Fprintf(w, "body %d", code)
		}
	})
	s := newSender(t, Config{AllowedNetworks: loopback()})

	tests := []struct {
		path   string
		kind   Class
		status int
		body   string
	}{
		{"/status/200", Succeeded, 200, "body 200"},
		{"/status/201", Succeeded, 201, "body 201"},
		{"/status/204", Succeeded, 204, ""},
		{"/redirect", Succeeded, 200, "body 200"},
		{"/status/400", Permanent, 400, "body 400"},
		{"/status/404", Permanent, 404, "body 404"},
		{"/status/408", Retryable, 408, "body 408"},
		{"/status/425", Retryable, 425, "body 425"},
		{"/status/429", Retryable, 429, "body 429"},
		{"/status/500", Retryable, 500, "body 500"},
		{"/status/503", Retryable, 503, "body 503"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			out := s.Send(t.Context(), newJob(srv.URL+tt.path))
			if out.Class != tt.kind || !out.Attempted || out.Status != tt.status {
				t.Fatalf("got kind=%v attempted=%v status=%d, want %v true %d (err %v)",
					out.Class, out.Attempted, out.Status, tt.kind, tt.status, out.Err)
			}
			// The body is kept on failures too: it is what tells a user why.
			if string(out.Body) != tt.body {
				t.Errorf("body %q, want %q", out.Body, tt.body)
			}
			if (out.Err == nil) != (tt.kind == Succeeded) {
				t.Errorf("err = %v for kind %v", out.Err, out.Class)
			}
			if out.Err != nil && !strings.Contains(out.Err.Error(), "status "+strconv.Itoa(tt.status)) {
				t.Errorf("err %q does not name the status", out.Err)
			}
		})
	}
}

func TestConnectionRefusedIsRetry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	s := newSender(t, Config{AllowedNetworks: loopback()})
	out := s.Send(t.Context(), newJob("http://"+addr+"/"))
	if out.Class != Retryable || !out.Attempted || out.Status != 0 {
		t.Fatalf("got %v attempted=%v status=%d, want retry attempted", out.Class, out.Attempted, out.Status)
	}
	if !errors.Is(out.Err, syscall.ECONNREFUSED) {
		t.Errorf("err %v does not wrap ECONNREFUSED", out.Err)
	}
}

func TestTimeoutIsRetry(t *testing.T) {
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers; ends when the client gives up
	})
	s := newSender(t, Config{AllowedNetworks: loopback()})
	j := newJob(srv.URL)
	j.Timeout = job.Duration(50 * time.Millisecond)

	out := s.Send(safetyNet(t), j)
	if out.Class != Retryable || !out.Attempted {
		t.Fatalf("got %v attempted=%v, want retry attempted (err %v)", out.Class, out.Attempted, out.Err)
	}
	var te *TimeoutError
	if !errors.As(out.Err, &te) || te.After != 50*time.Millisecond {
		t.Fatalf("err %v is not a 50ms TimeoutError", out.Err)
	}
	if !errors.Is(out.Err, context.DeadlineExceeded) {
		t.Errorf("err %v does not match context.DeadlineExceeded", out.Err)
	}
	if !strings.Contains(out.Err.Error(), "timed out after 50ms") {
		t.Errorf("err %q does not say it timed out", out.Err)
	}
}

// A body that trickles in defeats per-read idle timeouts; the attempt's
// deadline must cover reading the body too.
func TestSlowBodyIsRetry(t *testing.T) {
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	})
	s := newSender(t, Config{AllowedNetworks: loopback()})
	j := newJob(srv.URL)
	// On a loaded machine even the headers may miss a short deadline; the
	// deadline grows until they make it, since the verdict is about the
	// body that follows them.
	var out Outcome
	for timeout := 50 * time.Millisecond; ; timeout *= 2 {
		j.Timeout = job.Duration(timeout)
		if out = s.Send(safetyNet(t), j); out.Status != 0 || timeout > 30*time.Second {
			break
		}
	}
	if out.Class != Retryable || !out.Attempted || out.Status != 200 {
		t.Fatalf("got %v attempted=%v status=%d, want retry attempted 200 (err %v)", out.Class, out.Attempted, out.Status, out.Err)
	}
	var te *TimeoutError
	if !errors.As(out.Err, &te) || !strings.Contains(out.Err.Error(), "reading response body") {
		t.Errorf("err %v: want a body-read timeout", out.Err)
	}
}

func TestRetryAfterInOutcome(t *testing.T) {
	future := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", r.URL.Query().Get("ra"))
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		w.WriteHeader(code)
	})
	s := newSender(t, Config{AllowedNetworks: loopback(), MaxRetryAfter: 5 * time.Minute})

	tests := []struct {
		code int
		ra   string
		want time.Duration
	}{
		{429, "120", 120 * time.Second},
		{503, "0", 0},
		{503, "-5", 0},
		{429, "100000", 5 * time.Minute}, // capped
		{503, future, 5 * time.Minute},   // capped
		{503, past, 0},
		{503, "soon", 0},
		{404, "120", 0}, // only retries carry a delay
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %s", tt.code, tt.ra), func(t *testing.T) {
			u := fmt.Sprintf("%s/?code=%d&ra=%s", srv.URL, tt.code, urlQueryEscape(tt.ra))
			out := s.Send(t.Context(), newJob(u))
			if out.RetryAfter != tt.want {
				t.Errorf("RetryAfter = %v, want %v (kind %v)", out.RetryAfter, tt.want, out.Class)
			}
		})
	}
}

func urlQueryEscape(s string) string {
	return strings.NewReplacer(" ", "%20", ",", "%2C", ":", "%3A").Replace(s)
}

// echo reports what the server received.
type echo struct {
	Method, ContentType, Body, Idem, Custom, UA, Host string
}

func echoServer(t *testing.T) *httptest.Server {
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 1024)
		n, _ := r.Body.Read(b)
		json.NewEncoder(w).Encode(echo{
			Method:      r.Method,
			ContentType: r.Header.Get("Content-Type"),
			Body:        string(b[:n]),
			Idem:        r.Header.Get("Idempotency-Key"),
			Custom:      r.Header.Get("X-Request-Id"),
			UA:          r.UserAgent(),
			Host:        r.Host,
		})
	})
	return srv
}

func sendEcho(t *testing.T, s *Sender, j *job.Job) echo {
	t.Helper()
	out := s.Send(t.Context(), j)
	if out.Class != Succeeded {
		t.Fatalf("send: %v %v", out.Class, out.Err)
	}
	var e echo
	if err := json.Unmarshal(out.Body, &e); err != nil {
		t.Fatalf("decoding echo %q: %v", out.Body, err)
	}
	return e
}

func TestRequestBodyAndHeaders(t *testing.T) {
	srv := echoServer(t)
	s := newSender(t, Config{AllowedNetworks: loopback(), IdempotencyHeader: DefaultIdempotencyHeader})

	j := newJob(srv.URL)
	j.Method = http.MethodPost
	j.Data = json.RawMessage(`"plain text"`)
	e := sendEcho(t, s, j)
	if e.Method != "POST" || e.Body != "plain text" || e.ContentType != job.TypeText {
		t.Errorf("string data: %+v", e)
	}
	if e.Idem != "job-1" || e.UA != "jetpost/1" {
		t.Errorf("idempotency key %q, user agent %q", e.Idem, e.UA)
	}

	j.Data = json.RawMessage(`{"a": 1, "b": ["x y", "é"]}`)
	if e := sendEcho(t, s, j); e.Body != `a=1&b=x+y&b=%C3%A9` || e.ContentType != job.TypeForm {
		t.Errorf("form data: %+v", e)
	}

	j.Data, j.JSON = nil, json.RawMessage(`{"a": 1}`)
	if e := sendEcho(t, s, j); e.Body != `{"a": 1}` || e.ContentType != job.TypeJSON {
		t.Errorf("JSON body: %+v", e)
	}

	// The job's own headers win, whatever their case.
	j.Headers = map[string]string{
		"content-type":    "text/plain",
		"idempotency-key": "mine",
		"user-agent":      "custom/2",
		"Host":            "example.test",
	}
	if e := sendEcho(t, s, j); e.ContentType != "text/plain" || e.Idem != "mine" || e.UA != "custom/2" || e.Host != "example.test" {
		t.Errorf("job headers: %+v", e)
	}
}

// A job's params are sent in the query, after the URL's own, as the
// request URI the target reads.
func TestParamsInTheRequestURI(t *testing.T) {
	uris := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { uris <- r.RequestURI }))
	t.Cleanup(srv.Close)
	s := newSender(t, Config{AllowedNetworks: loopback()})
	j := newJob(srv.URL + "/s?a=%7e#frag")
	j.Params = json.RawMessage(`{"q": "x y", "n": [1, 2.0]}`)
	if out := s.Send(t.Context(), j); out.Class != Succeeded {
		t.Fatalf("send: %v %v", out.Class, out.Err)
	}
	if got, want := <-uris, "/s?a=%7e&q=x+y&n=1&n=2.0"; got != want {
		t.Errorf("request URI %s, want %s", got, want)
	}
}

func TestIdempotencyHeaderConfig(t *testing.T) {
	srv := echoServer(t)

	off := newSender(t, Config{AllowedNetworks: loopback()})
	if e := sendEcho(t, off, newJob(srv.URL)); e.Idem != "" || e.Custom != "" {
		t.Errorf("disabled: got %+v", e)
	}

	custom := newSender(t, Config{AllowedNetworks: loopback(), IdempotencyHeader: "X-Request-Id", UserAgent: "bot/3"})
	if e := sendEcho(t, custom, newJob(srv.URL)); e.Custom != "job-1" || e.Idem != "" || e.UA != "bot/3" {
		t.Errorf("custom: got %+v", e)
	}
}

func TestPost(t *testing.T) {
	srv := echoServer(t)
	s := newSender(t, Config{AllowedNetworks: loopback(), IdempotencyHeader: DefaultIdempotencyHeader})
	out := s.Post(t.Context(), Callback{URL: srv.URL + "/cb", Body: []byte(`{"ok":true}`), Key: "job-1/result"})
	if out.Class != Succeeded || !out.Attempted {
		t.Fatalf("post: %v %v", out.Class, out.Err)
	}
	var e echo
	if err := json.Unmarshal(out.Body, &e); err != nil {
		t.Fatal(err)
	}
	want := echo{Method: "POST", ContentType: "application/json", Body: `{"ok":true}`, Idem: "job-1/result", UA: "jetpost/1", Host: strings.TrimPrefix(srv.URL, "http://")}
	if e != want {
		t.Errorf("got %+v, want %+v", e, want)
	}
}

func TestResponseTruncation(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Write([]byte(strings.Repeat("a", n)))
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	s := newSender(t, Config{AllowedNetworks: loopback(), MaxResponseBytes: 10})

	for _, tt := range []struct {
		n         int
		wantLen   int
		truncated bool
	}{
		{0, 0, false},
		{9, 9, false},
		{10, 10, false},
		{11, 10, true},
		{100, 10, true},
		{4 << 20, 10, true}, // not read to the end: the connection is dropped instead
	} {
		out := s.Send(t.Context(), newJob(fmt.Sprintf("%s/?n=%d", srv.URL, tt.n)))
		if out.Class != Succeeded || len(out.Body) != tt.wantLen || out.BodyTruncated != tt.truncated {
			t.Errorf("n=%d: kind %v, %d bytes, truncated=%v; want %d bytes, truncated=%v (err %v)",
				tt.n, out.Class, len(out.Body), out.BodyTruncated, tt.wantLen, tt.truncated, out.Err)
		}
	}

	// Whether the transport reuses a drained connection also depends on how
	// soon its writer goroutine reports the request written (net/http waits
	// 50 ms for it), so the count is shown, not asserted;
	// TestReadBodyDrainsShortTailsOnly checks the drain itself.
	before := conns.Load()
	for range 3 {
		s.Send(t.Context(), newJob(srv.URL+"/?n=100"))
	}
	t.Logf("%d new connections for 3 sequential truncated responses with short tails", conns.Load()-before)
}

// tailBody is a response body that records how it was read.
type tailBody struct {
	r           io.Reader
	read        int
	eof, closed bool
}

func (b *tailBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read += n
	b.eof = b.eof || err == io.EOF
	return n, err
}

func (b *tailBody) Close() error { b.closed = true; return nil }

// A truncated body with a short tail is read to its end, which lets the
// transport put the connection back in its pool; a long tail is not
// downloaded to be thrown away.
func TestReadBodyDrainsShortTailsOnly(t *testing.T) {
	const limit = 10
	for _, tt := range []struct {
		n       int
		wantEOF bool
	}{{100, true}, {limit + drainBytes, true}, {4 << 20, false}} {
		b := &tailBody{r: strings.NewReader(strings.Repeat("a", tt.n))}
		body, truncated, err := readBody(&http.Response{Body: b, ContentLength: -1}, limit)
		if err != nil || len(body) != limit || !truncated {
			t.Errorf("n=%d: %d bytes, truncated=%v, err %v; want %d, truncated", tt.n, len(body), truncated, err, limit)
		}
		if b.eof != tt.wantEOF || !b.closed || b.read > limit+1+drainBytes {
			t.Errorf("n=%d: read %d bytes, to the end: %v, closed: %v; want to the end: %v, at most %d bytes, closed",
				tt.n, b.read, b.eof, b.closed, tt.wantEOF, limit+1+drainBytes)
		}
	}
}

func TestBuildErrorsArePermanent(t *testing.T) {
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {})
	s := newSender(t, Config{AllowedNetworks: loopback()})
	for name, j := range map[string]*job.Job{
		"method":       {ID: "1", Method: "GE T", URL: srv.URL},
		"header name":  {ID: "1", Method: "GET", URL: srv.URL, Headers: map[string]string{"Bad Name": "x"}},
		"header value": {ID: "1", Method: "GET", URL: srv.URL, Headers: map[string]string{"X-A": "a\r\nInjected: 1"}},
		"scheme":       {ID: "1", Method: "GET", URL: "ftp://" + strings.TrimPrefix(srv.URL, "http://")},
		"no host":      {ID: "1", Method: "GET", URL: "http:///path"},
		"unparsable":   {ID: "1", Method: "GET", URL: "http://[::1"},
	} {
		out := s.Send(t.Context(), j)
		if out.Class != Permanent || out.Attempted || out.Err == nil {
			t.Errorf("%s: got %v attempted=%v err=%v, want permanent, not attempted", name, out.Class, out.Attempted, out.Err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("server saw %d requests", n)
	}
}

// Secrets hide in userinfo, headers and query-less URLs; none may surface in
// error texts that end up in result records and logs.
func TestErrorsCarryNoSecrets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://admin:hunter2@169.254.169.254/latest/meta-data/", http.StatusFound)
	})
	s := newSender(t, Config{AllowedNetworks: loopback()})

	secretHeaders := map[string]string{
		"Authorization":       "Bearer tok-auth",
		"Proxy-Authorization": "Basic tok-proxy",
		"Cookie":              "session=tok-cookie",
	}
	for _, u := range []string{
		"http://alice:pa55word@" + closed + "/x",                // network error
		"http://alice:pa55word@" + srv.Listener.Addr().String(), // redirect to a refused address
		"ftp://alice:pa55word@example.test/",                    // build error
		"http://alice:pa55word@example.test:99999/",             // bad port
	} {
		j := newJob(u)
		j.Headers = secretHeaders
		out := s.Send(t.Context(), j)
		if out.Err == nil {
			t.Fatalf("%s: no error", u)
		}
		msg := out.Err.Error()
		for _, secret := range []string{"alice", "pa55word", "admin", "hunter2", "tok-auth", "tok-proxy", "tok-cookie"} {
			if strings.Contains(msg, secret) {
				t.Errorf("error %q contains %q", msg, secret)
			}
		}
	}
}

func TestHTTP2OverTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Proto))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	s := newSender(t, Config{AllowedNetworks: loopback()})
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	s.transport.TLSClientConfig = &tls.Config{RootCAs: pool} // before first use

	out := s.Send(t.Context(), newJob(srv.URL))
	if out.Class != Succeeded || string(out.Body) != "HTTP/2.0" {
		t.Fatalf("got %v %q (err %v), want success over HTTP/2.0", out.Class, out.Body, out.Err)
	}
}

func TestNewValidatesAndDefaults(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.cfg
	if c.Timeout != 30*time.Second || c.MaxResponseBytes != 64<<10 || c.MaxConnsPerHost != 64 ||
		c.MaxRedirects != 5 || c.MaxRetryAfter != 5*time.Minute || c.UserAgent != "jetpost/1" ||
		c.Breaker != (Breaker{Failures: 10, FailureRatio: 0.5, Window: time.Minute, OpenTimeout: 30 * time.Second, HalfOpenRequests: 1}) ||
		c.RetryStatuses.String() != "408,425,429,5xx" || c.IdempotencyHeader != "" {
		t.Errorf("defaults: %+v", c)
	}
	if s.transport.MaxIdleConnsPerHost != 64 || s.transport.Proxy != nil {
		t.Errorf("transport: idle per host %d, proxy set %v", s.transport.MaxIdleConnsPerHost, s.transport.Proxy != nil)
	}

	for name, cfg := range map[string]Config{
		"timeout":     {Timeout: -1},
		"body":        {MaxResponseBytes: -1},
		"conns":       {MaxConnsPerHost: -1},
		"retry-after": {MaxRetryAfter: -1},
		"breaker":     {Breaker: Breaker{OpenTimeout: -1}},
		"window":      {Breaker: Breaker{Window: -1}},
		"ratio":       {Breaker: Breaker{FailureRatio: 1.5}},
		"idem header": {IdempotencyHeader: "Idempotency Key"},
		"user agent":  {UserAgent: "a\nb"},
		"network":     {AllowedNetworks: []netip.Prefix{{}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

func TestStatusSet(t *testing.T) {
	set, err := ParseStatusSet(" 408, 425 ,429,5XX")
	if err != nil {
		t.Fatal(err)
	}
	if set.String() != DefaultRetryStatuses().String() {
		t.Errorf("parsed %v, want the default set", set)
	}
	for code, want := range map[int]bool{408: true, 425: true, 429: true, 500: true, 599: true, 200: false, 404: false, 499: false, 600: false} {
		if set.Contains(code) != want {
			t.Errorf("Contains(%d) = %v", code, !want)
		}
	}
	r, err := ParseStatusSet("500-504,1xx")
	if err != nil || !r.Contains(504) || r.Contains(505) || !r.Contains(100) || r.String() != "500-504,1xx" {
		t.Errorf("range: %v %v", r, err)
	}
	for _, bad := range []string{"", " ", "6xx", "99", "600", "abc", "504-500", "429,,500", "5x", "4294967725"} {
		if _, err := ParseStatusSet(bad); err == nil {
			t.Errorf("ParseStatusSet(%q) accepted", bad)
		}
	}
	if _, err := ParseStatusSet("429,oops"); err == nil || !strings.Contains(err.Error(), `"oops"`) {
		t.Errorf("error %v does not name the bad entry", err)
	}
}

func TestRetryStatusesConfig(t *testing.T) {
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
	})
	only429, _ := ParseStatusSet("429")
	s := newSender(t, Config{AllowedNetworks: loopback(), RetryStatuses: only429})
	for code, want := range map[int]Class{429: Retryable, 503: Permanent, 408: Permanent, 200: Succeeded} {
		if out := s.Send(t.Context(), newJob(fmt.Sprintf("%s/%d", srv.URL, code))); out.Class != want {
			t.Errorf("%d: got %v, want %v", code, out.Class, want)
		}
	}
}
