package console

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/workertest"
	"github.com/jetpost/jetpost/pkg/job"
)

const testToken = "a-console-token-for-tests"

// rig is a console on a real embedded server, served by httptest.
type rig struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	srv *httptest.Server
	c   *Console
}

func newRig(t *testing.T, ns interface{ ClientURL() string }, token string) *rig {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.Setup(t.Context(), js, workertest.Names(), workertest.Streams()); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{JS: js, Names: workertest.Names(), Token: token, Worker: "w-test", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(func() { srv.Close(); c.Close() })
	return &rig{nc: nc, js: js, srv: srv, c: c}
}

// do sends a request and returns the status and body.
func (r *rig) do(t *testing.T, method, path string, header map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, r.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (r *rig) publish(t *testing.T, j *job.Job) {
	t.Helper()
	pub := queue.NewPublisher(r.js, workertest.Names(), 1, nil)
	if err := pub.Publish(t.Context(), j); err != nil {
		t.Fatal(err)
	}
	if st := pub.Close(); st.Published != 1 {
		t.Fatalf("published %+v", st)
	}
}

// Without a token the actions are off (403) and the snapshot says so;
// with one, a request needs it exactly, by POST, for a batch that exists,
// from whatever origin (a reverse proxy's); then the pause is stored as
// enqueue pause stores it.
func TestActionsNeedTheToken(t *testing.T) {
	ns := natstest.RunServer(t)
	off := newRig(t, ns, "")
	if code, body, _ := off.do(t, "POST", "/api/batches/b/pause", map[string]string{"Authorization": "Bearer " + testToken}); code != http.StatusForbidden || !strings.Contains(body, "JETPOST_CONSOLE_TOKEN") {
		t.Errorf("pause without a configured token: %d %s, want 403 naming JETPOST_CONSOLE_TOKEN", code, body)
	}
	var snap Snapshot
	_, body, _ := off.do(t, "GET", "/api/snapshot", nil)
	if err := json.Unmarshal([]byte(body), &snap); err != nil || snap.Actions || snap.Worker != "w-test" {
		t.Errorf("snapshot without a token: %v %+v", err, snap)
	}

	on := newRig(t, ns, testToken)
	on.publish(t, &job.Job{ID: "j1", Batch: "b", Method: "GET", URL: "http://127.0.0.1:9/x", EnqueuedAt: time.Now().UTC()})
	bearer := map[string]string{"Authorization": "Bearer " + testToken}
	for _, tc := range []struct {
		name, method, path string
		header             map[string]string
		want               int
	}{
		{"no token", "POST", "/api/batches/b/pause", nil, http.StatusUnauthorized},
		{"wrong token", "POST", "/api/batches/b/pause", map[string]string{"Authorization": "Bearer " + testToken + "x"}, http.StatusUnauthorized},
		{"token as basic", "POST", "/api/batches/b/pause", map[string]string{"Authorization": "Basic " + testToken}, http.StatusUnauthorized},
		{"GET", "GET", "/api/batches/b/pause", bearer, http.StatusMethodNotAllowed},
		{"unknown batch", "POST", "/api/batches/nosuch/pause", bearer, http.StatusNotFound},
		{"bad batch id", "POST", "/api/batches/a.b/pause", bearer, http.StatusBadRequest},
		{"unknown action", "POST", "/api/batches/b/purge", bearer, http.StatusNotFound},
	} {
		if code, body, h := on.do(t, tc.method, tc.path, tc.header); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		} else if code == http.StatusUnauthorized && h.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
	}
	if c, _, err := queue.BatchEntry(t.Context(), on.js, workertest.Names(), "b"); err != nil || c.State != "" && c.State != queue.BatchRunning {
		t.Fatalf("refused requests changed the batch: %+v %v", c, err)
	}
	// Behind a reverse proxy the page's origin is not the Host the worker
	// sees: the token alone decides.
	code, body, _ := on.do(t, "POST", "/api/batches/b/pause", map[string]string{"Authorization": "Bearer " + testToken, "Origin": "https://console.example"})
	var rep queue.ControlReport
	if code != http.StatusOK || json.Unmarshal([]byte(body), &rep) != nil || rep.State != queue.BatchPaused || rep.Open != 1 {
		t.Fatalf("pause with the token: %d %s", code, body)
	}
	if c, ok, err := queue.BatchEntry(t.Context(), on.js, workertest.Names(), "b"); err != nil || !ok || c.State != queue.BatchPaused {
		t.Errorf("after the console's pause the batch is %+v (%v, %v), want paused", c, ok, err)
	}
}

// The page and its assets come with headers that keep other sites from
// framing it or feeding it scripts.
func TestPageAndHeaders(t *testing.T) {
	ns := natstest.RunServer(t)
	r := newRig(t, ns, "")
	for _, path := range []string{"/", "/assets/app.js", "/assets/app.css"} {
		code, body, h := r.do(t, "GET", path, nil)
		if code != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %d", path, code)
		}
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
	}
	if code, _, _ := r.do(t, "GET", "/nothing-here", nil); code != http.StatusNotFound {
		t.Errorf("GET /nothing-here: %d, want 404", code)
	}
}

// The event stream frames each snapshot as an SSE event of JSON, and the
// stream's first event comes without waiting for a tick.
func TestEventStreamSendsSnapshots(t *testing.T) {
	ns := natstest.RunServer(t)
	r := newRig(t, ns, testToken)
	r.publish(t, &job.Job{ID: "j1", Batch: "sse", Method: "GET", URL: "http://127.0.0.1:9/x", EnqueuedAt: time.Now().UTC()})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", r.srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if n := len(lines); n >= 2 && strings.HasPrefix(lines[n-2], "data: ") && lines[n-1] == "" {
			break
		}
	}
	if len(lines) < 5 || lines[0] != "retry: 2000" || lines[2] != "event: snapshot" {
		t.Fatalf("stream began %q", lines)
	}
	var snap Snapshot
	if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[3], "data: ")), &snap); err != nil {
		t.Fatal(err)
	}
	if len(snap.Batches) != 1 || snap.Batches[0].Batch != "sse" || snap.Batches[0].Open != 1 || snap.Batches[0].Total != 1 || !snap.Actions {
		t.Errorf("snapshot %+v", snap)
	}
}

// Concurrent pollers of /api/snapshot share one read, as the event
// stream's viewers do.
func TestSnapshotPollersShareARead(t *testing.T) {
	ns := natstest.RunServer(t)
	r := newRig(t, ns, "")
	gate := make(chan struct{})
	var src countingRead
	r.c.hub = newHub(func(ctx context.Context) Snapshot { s := src.read(ctx); <-gate; return s }, time.Hour)
	const pollers = 4
	codes := make(chan int, pollers)
	for range pollers {
		go func() {
			resp, err := http.Get(r.srv.URL + "/api/snapshot")
			if err != nil {
				codes <- 0
				return
			}
			defer resp.Body.Close()
			var s Snapshot
			if json.NewDecoder(resp.Body).Decode(&s) != nil || s.Lag != 1 {
				codes <- -1
				return
			}
			codes <- resp.StatusCode
		}()
	}
	// Every poller waits on the hub (or, reading by itself, on the gate).
	waitUntil(t, "every poller waiting", func() bool {
		r.c.hub.mu.Lock()
		defer r.c.hub.mu.Unlock()
		return len(r.c.hub.subs) == pollers || src.n.Load() == pollers
	})
	close(gate)
	for range pollers {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("a poller got %d (0: no answer, -1: not the first read)", code)
		}
	}
	if n := src.n.Load(); n != 1 {
		t.Errorf("%d reads for %d concurrent pollers, want 1", n, pollers)
	}
}

// A viewer that stops reading its event stream (gone without closing the
// connection) has its stream ended by the write deadline: the hub loses
// the subscriber and stops reading.
func TestEventStreamDropsAStalledViewer(t *testing.T) {
	ns := natstest.RunServer(t)
	r := newRig(t, ns, "")
	r.c.writeTimeout = 100 * time.Millisecond
	big := strings.Repeat("x", 1<<20) // fills the socket buffers in a few ticks
	r.c.hub = newHub(func(context.Context) Snapshot { return Snapshot{Warnings: []string{big}} }, time.Millisecond)
	conn, err := net.Dial("tcp", r.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /events HTTP/1.1\r\nHost: console\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	subs := func() int {
		r.c.hub.mu.Lock()
		defer r.c.hub.mu.Unlock()
		return len(r.c.hub.subs)
	}
	waitUntil(t, "the stream to start", func() bool { return subs() == 1 })
	// The client reads nothing: only the write deadline ends the stream.
	waitUntil(t, "the stalled stream to end", func() bool { return subs() == 0 })
	r.c.hub.idle()
}
