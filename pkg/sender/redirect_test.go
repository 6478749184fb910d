package sender

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// headerLog records the headers each request to a server carried, by path.
type headerLog struct {
	mu   sync.Mutex
	seen map[string]http.Header
}

func (l *headerLog) record(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]http.Header{}
	}
	l.seen[r.URL.Path] = r.Header.Clone()
}

func (l *headerLog) get(path string) http.Header {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[path]
}

// secretHeaders are every kind of secret header a redirect could carry
// along: the built-in credential headers and one named in SecretHeaders;
// X-Trace is no secret.
func secretHeaders() map[string]string {
	return map[string]string{
		"Authorization":       "Bearer AUTH",
		"Proxy-Authorization": "Basic PROXY",
		"Cookie":              "session=COOKIE",
		"X-Api-Key":           "APIKEY",
		"X-Trace":             "trace-1",
	}
}

// A redirect to another origin (here: another port of the same address,
// which net/http itself treats as the same host) reaches it without
// Referer and without any secret header; a redirect within the origin
// keeps them. Once a chain has left the origin, coming back does not bring
// the secrets back.
func TestCrossOriginRedirectDropsSecrets(t *testing.T) {
	var log headerLog
	other, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		log.record(r)
		if back := r.URL.Query().Get("back"); back != "" {
			http.Redirect(w, r, back, http.StatusFound)
		}
	})
	var first string
	origin, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		log.record(r)
		switch r.URL.Path {
		case "/cross":
			http.Redirect(w, r, other.URL+"/landed", http.StatusFound)
		case "/same":
			http.Redirect(w, r, "/same-landed", http.StatusFound)
		case "/round-trip":
			http.Redirect(w, r, other.URL+"/bounce?back="+first+"/returned", http.StatusTemporaryRedirect)
		}
	})
	first = origin.URL
	s := newSender(t, Config{AllowedNetworks: loopback(), SecretHeaders: []string{"x-api-key"}})
	send := func(path string) {
		t.Helper()
		// The query's secret would travel in a Referer.
		j := newJob(origin.URL + path + "?api_key=QUERYSECRET")
		j.Headers = secretHeaders()
		if o := s.Send(safetyNet(t), j); o.Class != Succeeded {
			t.Fatalf("%s: %v %v", path, o.Class, o.Err)
		}
	}
	send("/cross")
	send("/same")
	send("/round-trip")

	secrets := []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "Referer"}
	for _, path := range []string{"/landed", "/bounce", "/returned"} {
		h := log.get(path)
		if h == nil {
			t.Fatalf("%s: no request arrived", path)
		}
		for _, k := range secrets {
			if v := h.Get(k); v != "" {
				t.Errorf("%s: %s: %q reached another origin (or came back from one)", path, k, v)
			}
		}
		if h.Get("X-Trace") != "trace-1" {
			t.Errorf("%s: a header that is no secret was dropped too: %v", path, h)
		}
	}
	same := log.get("/same-landed")
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key"} {
		if same.Get(k) == "" {
			t.Errorf("a redirect within the origin lost %s: %v", k, same)
		}
	}
	for path, h := range log.seen {
		for k, vv := range h {
			if strings.Contains(strings.Join(vv, ","), "QUERYSECRET") && !strings.HasPrefix(path, "/same") {
				t.Errorf("%s: %s carries the first URL's secret query: %q", path, k, vv)
			}
		}
	}
}

// A redirect to a scheme the sender cannot follow fails the job once,
// permanently: the host answered, and would answer the same way again.
func TestRedirectToUnsupportedSchemeIsPermanent(t *testing.T) {
	for _, loc := range []string{"ftp://files.example.com/x", "file:///etc/passwd", "gopher://example.com/", "http:///no-host"} {
		srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", loc)
			w.WriteHeader(http.StatusFound)
		})
		s := newSender(t, Config{AllowedNetworks: loopback(), Breaker: Breaker{Failures: 1}})
		o := s.Send(safetyNet(t), newJob(srv.URL))
		if o.Class != Permanent || !o.Attempted || o.Status != http.StatusFound || !errors.Is(o.Err, errUnfollowableRedirect) {
			t.Errorf("redirect to %s: %v attempted=%v status=%d err=%v; want permanent 302, redirect cannot be followed",
				loc, o.Class, o.Attempted, o.Status, o.Err)
		}
		if hits.Load() != 1 {
			t.Errorf("redirect to %s: %d requests", loc, hits.Load())
		}
		for host, st := range s.BreakerStates() {
			if st != "closed" {
				t.Errorf("redirect to %s: breaker of %s %s; the host answered", loc, host, st)
			}
		}
	}
}

// Response headers are read up to MaxResponseHeaderBytes (64 KiB by
// default), not net/http's 10 MiB; more fails the attempt permanently,
// saying which limit to raise.
func TestResponseHeadersOverTheLimit(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	srv, _ := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Big", big)
	})
	s := newSender(t, Config{AllowedNetworks: loopback(), Breaker: Breaker{Failures: 1}})
	o := s.Send(safetyNet(t), newJob(srv.URL))
	if o.Class != Permanent || !o.Attempted || o.Status != 0 || !errors.Is(o.Err, errHeaderLimit) ||
		!strings.Contains(o.Err.Error(), "JETPOST_MAX_RESPONSE_HEADER_BYTES") {
		t.Fatalf("%v attempted=%v status=%d err=%v; want permanent, attempted, naming the limit", o.Class, o.Attempted, o.Status, o.Err)
	}
	for host, st := range s.BreakerStates() {
		if st != "closed" {
			t.Errorf("breaker of %s %s; the host answered", host, st)
		}
	}
	raised := newSender(t, Config{AllowedNetworks: loopback(), MaxResponseHeaderBytes: 1 << 20})
	if o := raised.Send(safetyNet(t), newJob(srv.URL)); o.Class != Succeeded {
		t.Errorf("with the limit raised to 1 MiB: %v %v", o.Class, o.Err)
	}
	if _, err := New(Config{MaxResponseHeaderBytes: -1}); err == nil {
		t.Error("a negative header limit was accepted")
	}
}
