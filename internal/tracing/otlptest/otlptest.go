// Package otlptest is an in-process OTLP/HTTP trace receiver for tests: an
// httptest server on 127.0.0.1 that decodes what exporters send
// (protobuf, gzip or not) and keeps every span.
package otlptest

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, ids in hex, attribute values as text.
type Span struct {
	Service                   string // the resource's service.name
	Name                      string
	Kind                      tracepb.Span_SpanKind
	TraceID, SpanID, ParentID string
	Attrs                     map[string]string
	Links                     []Link
	Error                     bool // status code ERROR
	StatusMessage             string
}

// Link is one of a span's links.
type Link struct {
	TraceID, SpanID string
	Attrs           map[string]string
}

// Receiver keeps the spans exporters sent it.
type Receiver struct {
	// Endpoint is the traces URL (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
	Endpoint string
	mu       sync.Mutex
	spans    []Span
	changed  chan struct{}
}

// Start runs a receiver until the test ends.
func Start(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{changed: make(chan struct{}, 1)}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.Endpoint = srv.URL + "/v1/traces"
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.NotFound(w, req)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer gz.Close()
		body = gz
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&msg)
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (r *Receiver) add(msg *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range msg.GetResourceSpans() {
		service := attrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, convert(service, s))
			}
		}
	}
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func convert(service string, s *tracepb.Span) Span {
	sp := Span{
		Service: service, Name: s.GetName(), Kind: s.GetKind(),
		TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
		Attrs:         attrs(s.GetAttributes()),
		Error:         s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
		StatusMessage: s.GetStatus().GetMessage(),
	}
	if p := s.GetParentSpanId(); len(p) > 0 {
		sp.ParentID = hex.EncodeToString(p)
	}
	for _, l := range s.GetLinks() {
		sp.Links = append(sp.Links, Link{
			TraceID: hex.EncodeToString(l.GetTraceId()), SpanID: hex.EncodeToString(l.GetSpanId()), Attrs: attrs(l.GetAttributes()),
		})
	}
	return sp
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = value(kv.GetValue())
	}
	return m
}

func value(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	}
	return v.String()
}

// Spans returns a copy of every span received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Wait returns the spans once done says they are all there. The timeout
// only bounds a broken test: exporters send on their own schedule.
func (r *Receiver) Wait(t testing.TB, what string, done func([]Span) bool) []Span {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		if s := r.Spans(); done(s) {
			return s
		}
		select {
		case <-r.changed:
		case <-timeout:
			t.Fatalf("no %s within 2 minutes; spans received:\n%s", what, Dump(r.Spans()))
		}
	}
}

// Named returns the spans whose name starts with prefix.
func Named(spans []Span, prefix string) []Span {
	var out []Span
	for _, s := range spans {
		if strings.HasPrefix(s.Name, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// Dump lists spans one a line, for failure messages.
func Dump(spans []Span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "%s %q trace=%s span=%s parent=%s links=%v attrs=%v\n", s.Service, s.Name, s.TraceID, s.SpanID, s.ParentID, s.Links, s.Attrs)
	}
	return b.String()
}

// NoSecrets fails t for a span whose attributes, status message or link
// attributes hold secret.
func NoSecrets(t testing.TB, spans []Span, secret string) {
	t.Helper()
	check := func(s Span, where, v string) {
		if strings.Contains(v, secret) {
			t.Errorf("span %q %s=%q holds a secret", s.Name, where, v)
		}
	}
	for _, s := range spans {
		check(s, "status message", s.StatusMessage)
		for k, v := range s.Attrs {
			check(s, "attribute "+k, v)
		}
		for _, l := range s.Links {
			for k, v := range l.Attrs {
				check(s, "link attribute "+k, v)
			}
		}
	}
}
