package tracing_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/tracing"
	"github.com/jetpost/jetpost/internal/tracing/otlptest"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, true},
	} {
		if got := tracing.Enabled(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("Enabled(%v) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

// newTracer exports every span as it ends, through the real OTLP/HTTP
// exporter, to an in-process receiver.
func newTracer(t *testing.T) (*tracing.Tracer, *otlptest.Receiver) {
	t.Helper()
	rcv := otlptest.Start(t)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(rcv.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	tr := tracing.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	t.Cleanup(func() {
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return tr, rcv
}

// recordingTarget keeps the traceparent of every request it answers.
type recordingTarget struct {
	mu     sync.Mutex
	parent []string
}

func (rt *recordingTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt.mu.Lock()
	rt.parent = append(rt.parent, r.Header.Get("traceparent"))
	rt.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (rt *recordingTarget) parents() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return append([]string(nil), rt.parent...)
}

const (
	userTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	userParent = "00-" + userTrace + "-00f067aa0ba902b7-01"
)

// A run under TRACEPARENT is its child; a delivery is the child of the
// job's own traceparent when it has one, links to the run's context and
// to the previous delivery; the request's client span is the delivery's
// child and the target receives its context.
func TestRunDeliveryAttemptChain(t *testing.T) {
	tr, rcv := newTracer(t)
	tr = tr.WithParent(userParent, "vendor=1")
	ctx := context.Background()
	_, run, headers := tr.StartRun(ctx, tracing.Run{Batch: "b1", Subject: "jetpost.jobs.b1", Template: "jetpost.jobs.{batch}"})
	tr.EndRun(run, 3, nil)
	if !strings.Contains(headers["traceparent"], userTrace) || headers["tracestate"] != "vendor=1" {
		t.Fatalf("message headers %v: want the user's trace and tracestate", headers)
	}

	prev := "00-11111111111111111111111111111111-2222222222222222-01"
	jobTrace := "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dctx, del := tr.StartDelivery(ctx, tracing.Delivery{
		Batch: "b1", JobID: "j1", Subject: "jetpost.jobs.b1", Template: "jetpost.jobs.{batch}",
		MessageParent: headers["traceparent"], MessageState: headers["tracestate"],
		JobParent: "00-" + jobTrace + "-bbbbbbbbbbbbbbbb-01", Previous: prev, Delivered: 2, Attempts: 1,
	})
	target := &recordingTarget{}
	srv := httptest.NewServer(target)
	defer srv.Close()
	client := http.Client{Transport: tr.Transport(http.DefaultTransport)}
	req, _ := http.NewRequestWithContext(dctx, http.MethodPost, srv.URL+"/hook?api_key=SECRET1&x=1", bytes.NewReader([]byte("{}")))
	req.Header.Set("traceparent", "00-"+jobTrace+"-bbbbbbbbbbbbbbbb-01")
	req.Header.Set("Authorization", "Bearer SECRET2")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if req.Header.Get("traceparent") != "00-"+jobTrace+"-bbbbbbbbbbbbbbbb-01" {
		t.Error("the transport changed the caller's request")
	}
	tr.EndDelivery(del, tracing.Outcome{Decision: "complete", Attempts: 2, Finished: true, OK: true})

	spans := rcv.Wait(t, "three spans", func(s []otlptest.Span) bool { return len(s) == 3 })
	runSpan, delSpan, client1 := byName(t, spans, "send jetpost.jobs.{batch}"), byName(t, spans, "process jetpost.jobs.{batch}"), byName(t, spans, "POST")
	if runSpan.TraceID != userTrace || runSpan.ParentID != "00f067aa0ba902b7" {
		t.Errorf("run span %+v: want a child of TRACEPARENT", runSpan)
	}
	if delSpan.TraceID != jobTrace || delSpan.ParentID != "bbbbbbbbbbbbbbbb" {
		t.Errorf("delivery span %+v: want a child of the job's own traceparent", delSpan)
	}
	if !hasLink(delSpan, runSpan.TraceID, runSpan.SpanID, tracing.LinkCreation) ||
		!hasLink(delSpan, "11111111111111111111111111111111", "2222222222222222", tracing.LinkPrevious) {
		t.Errorf("delivery links %+v: want the run's span (creation) and the previous delivery", delSpan.Links)
	}
	if client1.ParentID != delSpan.SpanID || client1.TraceID != delSpan.TraceID {
		t.Errorf("client span %+v: want a child of the delivery", client1)
	}
	if got, want := target.parents(), "00-"+jobTrace+"-"+client1.SpanID+"-01"; len(got) != 1 || got[0] != want {
		t.Errorf("target got traceparent %v, want %s (the client span's)", got, want)
	}
	otlptest.NoSecrets(t, spans, "SECRET")
	if client1.Attrs["http.response.status_code"] != "200" || !strings.Contains(client1.Attrs["url.full"], "x=1") {
		t.Errorf("client span attributes %v", client1.Attrs)
	}
}

// Without any parent (no TRACEPARENT, no job header), the delivery is the
// child of the run's span, which its message carries.
func TestDeliveryChildOfRun(t *testing.T) {
	tr, rcv := newTracer(t)
	ctx := context.Background()
	_, run, headers := tr.StartRun(ctx, tracing.Run{Batch: "b", Subject: "p.jobs.b", Template: "p.jobs.{batch}"})
	tr.EndRun(run, 1, nil)
	_, del := tr.StartDelivery(ctx, tracing.Delivery{Batch: "b", JobID: "j", MessageParent: headers["traceparent"], Template: "p.jobs.{batch}"})
	tr.EndDelivery(del, tracing.Outcome{Decision: "retry", Attempts: 1})
	spans := rcv.Wait(t, "two spans", func(s []otlptest.Span) bool { return len(s) == 2 })
	r, d := byName(t, spans, "send p.jobs.{batch}"), byName(t, spans, "process p.jobs.{batch}")
	if r.ParentID != "" {
		t.Errorf("run span has parent %s without TRACEPARENT", r.ParentID)
	}
	if d.TraceID != r.TraceID || d.ParentID != r.SpanID || !hasLink(d, r.TraceID, r.SpanID, tracing.LinkCreation) {
		t.Errorf("delivery %+v: want the run span's child, linked to it", d)
	}
	if d.Attrs["jetpost.decision"] != "retry" || d.Error {
		t.Errorf("delivery attributes %v error %v", d.Attrs, d.Error)
	}
}

// FromEnv reads the standard variables; the console exporter writes to
// the writer given, never to standard output.
func TestFromEnv(t *testing.T) {
	rcv := otlptest.Start(t)
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rcv.Endpoint, "OTEL_SERVICE_NAME": "svc-from-env",
		"TRACEPARENT": userParent,
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	tr, err := tracing.FromEnv(context.Background(), "jetpost-test", "v9", func(k string) string { return env[k] }, io.Discard)
	if err != nil || tr == nil {
		t.Fatalf("FromEnv: %v, %v", tr, err)
	}
	_, span, _ := tr.StartRun(context.Background(), tracing.Run{Batch: "b", Template: "t"})
	tr.EndRun(span, 0, nil)
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := rcv.Wait(t, "the run's span", func(s []otlptest.Span) bool { return len(s) == 1 })[0]
	if s.Service != "svc-from-env" || s.TraceID != userTrace {
		t.Errorf("span %+v: want service from OTEL_SERVICE_NAME, trace from TRACEPARENT", s)
	}

	var console bytes.Buffer
	tr, err = tracing.FromEnv(context.Background(), "jetpost-test", "", func(k string) string {
		return map[string]string{"OTEL_TRACES_EXPORTER": "console"}[k]
	}, &console)
	if err != nil {
		t.Fatal(err)
	}
	_, span, _ = tr.StartRun(context.Background(), tracing.Run{Batch: "b", Template: "console-run"})
	tr.EndRun(span, 0, nil)
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(console.String(), "send console-run") {
		t.Errorf("console exporter wrote %q", console.String())
	}

	off, err := tracing.FromEnv(context.Background(), "x", "", func(string) string { return "" }, io.Discard)
	if off != nil || err != nil {
		t.Errorf("FromEnv with nothing set = %v, %v; want nil (off)", off, err)
	}
}

func byName(t *testing.T, spans []otlptest.Span, name string) otlptest.Span {
	t.Helper()
	var found []otlptest.Span
	for _, s := range spans {
		if s.Name == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d spans named %q in:\n%s", len(found), name, otlptest.Dump(spans))
	}
	return found[0]
}

func hasLink(s otlptest.Span, traceID, spanID, kind string) bool {
	for _, l := range s.Links {
		if l.TraceID == traceID && l.SpanID == spanID && l.Attrs["jetpost.link.type"] == kind {
			return true
		}
	}
	return false
}
