package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/tracing/otlptest"
)

// traceTarget answers every request, keeping the traceparent each path
// received; the first request to /retry gets a 503, /gone a 404.
type traceTarget struct {
	mu      sync.Mutex
	parents map[string][]string
}

func (tt *traceTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tt.mu.Lock()
	tt.parents[r.URL.Path] = append(tt.parents[r.URL.Path], r.Header.Get("traceparent"))
	first := len(tt.parents[r.URL.Path]) == 1
	tt.mu.Unlock()
	if r.URL.Path == "/retry" && first {
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path == "/gone" {
		http.NotFound(w, r)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (tt *traceTarget) got(path string) []string {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return append([]string(nil), tt.parents[path]...)
}

// noOTel blanks the OTEL_* variables the test machine may have set, so
// that each test decides.
var noOTel = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", "OTEL_TRACES_EXPORTER=",
	"OTEL_SDK_DISABLED=", "TRACEPARENT=", "TRACESTATE="}

const (
	ciTrace  = "0af7651916cd43dd8448eb211c80319c"
	ciSpan   = "b7ad6b7169203331"
	ownTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	ownSpan  = "00f067aa0ba902b7"
)

func writeTraceJobs(t *testing.T, url string) string {
	t.Helper()
	lines := []string{
		`{"id":"ok","url":"` + url + `/ok?api_key=SECRETQUERY","headers":{"Authorization":"Bearer SECRETHEADER"},"callback":"` + url + `/cb"}`,
		`{"id":"retry","url":"` + url + `/retry?api_key=SECRETRETRY","headers":{"Authorization":"Bearer SECRETRETRYHEADER"}}`,
		`{"id":"gone","url":"` + strings.Replace(url, "http://", "http://user:SECRETPASS@", 1) + `/gone?token=SECRETGONE"}`,
		`{"id":"own","url":"` + url + `/own","headers":{"traceparent":"00-` + ownTrace + `-` + ownSpan + `-01"}}`,
	}
	path := filepath.Join(t.TempDir(), "jobs.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Issue 19, traces: enqueue run under a CI system's TRACEPARENT, a worker
// sends the jobs; every span reaches the OTLP receiver, the deliveries
// are children of the run's span (or of the job's own traceparent), a
// retry's second delivery links to the first, and each target receives
// the traceparent of the client span that sent its request.
func TestTracesEndToEnd(t *testing.T) {
	ns := natstest.RunServer(t)
	rcv := otlptest.Start(t)
	tt := &traceTarget{parents: map[string][]string{}}
	srv := httptest.NewServer(tt)
	defer srv.Close()
	otel := append(noOTel, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="+rcv.Endpoint, "OTEL_BSP_SCHEDULE_DELAY=50")
	w := start(t, "worker", workerEnv(ns.ClientURL(), otel...))
	w.waitLine("consuming jobs")

	out := filepath.Join(t.TempDir(), "results.jsonl")
	env := append(otel, "TRACEPARENT=00-"+ciTrace+"-"+ciSpan+"-01")
	code, stdout, stderr := runEnqueue(t, env, "--nats", ns.ClientURL(), "--batch", "traced", "--wait", "--out", out, writeTraceJobs(t, srv.URL))
	if code != 1 { // the job sent to /gone fails
		t.Fatalf("enqueue exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if res := readResults(t, out); len(res) != 4 || res["retry"].Attempts != 2 || res["ok"].Callback == nil || !res["ok"].Callback.OK ||
		res["gone"].OK || res["gone"].Error == "" {
		t.Fatalf("results %+v", res)
	}
	// The run, 5 deliveries that sent (a host's limits may defer others
	// before their request), 6 requests (ok, its callback, retry twice,
	// own, gone) and the callback's span.
	spans := rcv.Wait(t, "every span", func(s []otlptest.Span) bool {
		return len(otlptest.Named(s, "send ")) == 1 && len(filter(s, sent)) == 5 && len(filter(s, isClient)) == 6 &&
			len(otlptest.Named(s, "callback")) == 1
	})

	run := only(t, spans, func(s otlptest.Span) bool { return s.Name == "send jetpost.jobs.{batch}" })
	if run.TraceID != ciTrace || run.ParentID != ciSpan || run.Service != "jetpost-enqueue" || run.Attrs["jetpost.published"] != "4" {
		t.Errorf("run span %+v: want a child of TRACEPARENT that published 4", run)
	}
	process := func(id string) []otlptest.Span {
		return filter(spans, func(s otlptest.Span) bool { return sent(s) && s.Attrs["jetpost.job.id"] == id })
	}
	for _, id := range []string{"ok", "retry", "own", "gone"} {
		for _, d := range process(id) {
			if !linksTo(d, run.TraceID, run.SpanID, "creation") {
				t.Errorf("delivery of %s %+v: not linked to the run's span", id, d)
			}
			if wantTrace, wantParent := ciTrace, run.SpanID; id == "own" && (d.TraceID != ownTrace || d.ParentID != ownSpan) ||
				id != "own" && (d.TraceID != wantTrace || d.ParentID != wantParent) {
				t.Errorf("delivery of %s %+v: wrong parent", id, d)
			}
		}
	}
	retries := process("retry")
	if len(retries) != 2 {
		t.Fatalf("%d deliveries of the retried job:\n%s", len(retries), otlptest.Dump(spans))
	}
	firstD, secondD := retries[0], retries[1]
	if secondD.Attrs["jetpost.delivery"] == "1" {
		firstD, secondD = secondD, firstD
	}
	if !linksTo(secondD, firstD.TraceID, firstD.SpanID, "previous_delivery") || len(firstD.Links) != 1 {
		t.Errorf("retry: second delivery %+v does not link to the first %+v", secondD, firstD)
	}
	// Each request the target received carries a client span's context,
	// whose parent is its job's delivery (or the callback's span).
	for path, parents := range map[string][]otlptest.Span{"/ok": process("ok"), "/retry": retries, "/own": process("own"),
		"/gone": process("gone"), "/cb": filter(spans, func(s otlptest.Span) bool { return s.Name == "callback" })} {
		got := tt.got(path)
		if len(got) != len(parents) || len(got) == 0 {
			t.Errorf("%s: %d requests, %d parent spans", path, len(got), len(parents))
		}
		for _, tp := range got {
			client := only(t, spans, func(s otlptest.Span) bool { return tp == "00-"+s.TraceID+"-"+s.SpanID+"-01" })
			if !isChildOfAny(client, parents) || !strings.Contains(client.Attrs["url.full"], path) {
				t.Errorf("%s: traceparent %s is span %+v, not a child of its delivery", path, tp, client)
			}
		}
	}
	cb := only(t, spans, func(s otlptest.Span) bool { return s.Name == "callback" })
	if !isChildOfAny(cb, process("ok")) {
		t.Errorf("callback span %+v is not a child of its job's delivery", cb)
	}
	if gone := only(t, spans, func(s otlptest.Span) bool { return sent(s) && s.Attrs["jetpost.job.id"] == "gone" }); !gone.Error || gone.StatusMessage == "" {
		t.Errorf("failed delivery %+v: want an error status with a message", gone)
	}
	otlptest.NoSecrets(t, spans, "SECRET")
}

// Off (no OTEL_* variables): no traceparent is added, and a job's own
// goes to its target unchanged.
func TestTracesOffSendsNoTraceparent(t *testing.T) {
	ns := natstest.RunServer(t)
	tt := &traceTarget{parents: map[string][]string{}}
	srv := httptest.NewServer(tt)
	defer srv.Close()
	w := start(t, "worker", workerEnv(ns.ClientURL(), noOTel...))
	w.waitLine("consuming jobs")
	out := filepath.Join(t.TempDir(), "results.jsonl")
	env := append(noOTel, "TRACEPARENT=00-"+ciTrace+"-"+ciSpan+"-01")
	code, stdout, stderr := runEnqueue(t, env, "--nats", ns.ClientURL(), "--batch", "untraced", "--wait", "--out", out, writeTraceJobs(t, srv.URL))
	if code != 1 { // the job sent to /gone fails
		t.Fatalf("enqueue exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	// Every request arrived (a retry's twice): none with a traceparent.
	for p, n := range map[string]int{"/ok": 1, "/retry": 2, "/cb": 1, "/gone": 1} {
		if got := tt.got(p); len(got) != n {
			t.Errorf("%s received %d requests, want %d", p, len(got), n)
		}
		for _, tp := range tt.got(p) {
			if tp != "" {
				t.Errorf("%s received traceparent %q with tracing off", p, tp)
			}
		}
	}
	if got := tt.got("/own"); len(got) != 1 || got[0] != "00-"+ownTrace+"-"+ownSpan+"-01" {
		t.Errorf("/own received %q, want the job's own traceparent unchanged", got)
	}
}

// sent: a delivery span whose delivery sent a request (complete or
// retry), not one deferred before it.
func sent(s otlptest.Span) bool {
	d := s.Attrs["jetpost.decision"]
	return strings.HasPrefix(s.Name, "process ") && (d == "complete" || d == "retry")
}

func isClient(s otlptest.Span) bool { return s.Kind == tracepb.Span_SPAN_KIND_CLIENT }

func filter(spans []otlptest.Span, keep func(otlptest.Span) bool) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range spans {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

func only(t *testing.T, spans []otlptest.Span, match func(otlptest.Span) bool) otlptest.Span {
	t.Helper()
	found := filter(spans, match)
	if len(found) != 1 {
		t.Fatalf("%d matching spans, want 1, in:\n%s", len(found), otlptest.Dump(spans))
	}
	return found[0]
}

func linksTo(s otlptest.Span, traceID, spanID, kind string) bool {
	for _, l := range s.Links {
		if l.TraceID == traceID && l.SpanID == spanID && l.Attrs["jetpost.link.type"] == kind {
			return true
		}
	}
	return false
}

func isChildOfAny(s otlptest.Span, parents []otlptest.Span) bool {
	for _, p := range parents {
		if s.TraceID == p.TraceID && s.ParentID == p.SpanID {
			return true
		}
	}
	return false
}
