package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// scope is the instrumentation scope of every span jetpost makes.
const scope = "github.com/jetpost/jetpost"

// Tracer makes jetpost's spans. A nil *Tracer is tracing off: callers
// check for nil before anything else, so that off costs one comparison.
type Tracer struct {
	tp   *sdktrace.TracerProvider
	tr   trace.Tracer
	prop propagation.TraceContext
	// env is the context the process was started under (TRACEPARENT and
	// TRACESTATE, as CI systems pass it); invalid when none.
	env trace.SpanContext
}

// Enabled reports whether the standard OTEL_* variables ask for traces:
// an exporter named in OTEL_TRACES_EXPORTER (other than "none"), or an
// OTLP endpoint; never with OTEL_SDK_DISABLED=true. Unlike the SDK's own
// default (OTLP to localhost), nothing set means off.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); e {
	case "none":
		return false
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	}
	return true
}

// FromEnv builds the tracer the OTEL_* variables describe, or returns nil
// when they ask for none (Enabled). service is the default service.name
// (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win); the console
// exporter writes to console, not to standard output, which enqueue keeps
// for the batch id and results. The exporter reads the OTEL_EXPORTER_*
// variables from the process environment itself.
func FromEnv(ctx context.Context, service, version string, getenv func(string) string, console io.Writer) (*Tracer, error) {
	if !Enabled(getenv) {
		return nil, nil
	}
	var exp sdktrace.SpanExporter
	var err error
	if strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")) == "console" {
		exp, err = stdouttrace.New(stdouttrace.WithWriter(console))
	} else {
		exp, err = autoexport.NewSpanExporter(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: exporter: %w", err)
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(service)}
	if version != "" {
		attrs = append(attrs, semconv.ServiceVersion(version))
	}
	res, err := resource.New(ctx, resource.WithAttributes(attrs...),
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil && res == nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	t := New(sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)))
	return t.WithParent(getenv("TRACEPARENT"), getenv("TRACESTATE")), nil
}

// New wraps a provider (its sampler, processors and exporter decided by
// the caller; tests pass one that exports synchronously).
func New(tp *sdktrace.TracerProvider) *Tracer {
	return &Tracer{tp: tp, tr: tp.Tracer(scope)}
}

// WithParent returns a copy of t whose enqueue runs start under the
// traceparent and tracestate given (FromEnv passes TRACEPARENT and
// TRACESTATE); an invalid traceparent is ignored.
func (t *Tracer) WithParent(traceparent, tracestate string) *Tracer {
	c := *t
	c.env = t.extract(traceparent, tracestate)
	return &c
}

// Shutdown exports what is buffered and stops the provider.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if err := t.tp.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// Header names of the W3C Trace Context, on job messages and requests.
const (
	TraceparentHeader = "traceparent"
	TracestateHeader  = "tracestate"
)

// extract parses a W3C traceparent (and tracestate); the zero
// SpanContext when it is missing or not valid.
func (t *Tracer) extract(traceparent, tracestate string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	c := propagation.MapCarrier{TraceparentHeader: traceparent}
	if tracestate != "" {
		c[TracestateHeader] = tracestate
	}
	return trace.SpanContextFromContext(t.prop.Extract(context.Background(), c))
}

// Headers are the W3C headers of sc: traceparent and, if any, tracestate.
func (t *Tracer) Headers(sc trace.SpanContext) map[string]string {
	c := propagation.MapCarrier{}
	if sc.IsValid() {
		t.prop.Inject(trace.ContextWithSpanContext(context.Background(), sc), c)
	}
	return c
}

// Traceparent is sc as a traceparent value, "" if sc is not valid.
func (t *Tracer) Traceparent(sc trace.SpanContext) string {
	return t.Headers(sc)[TraceparentHeader]
}

// Start is FromEnv for a command: the process environment, and a stop
// that exports what is left (waiting at most shutdownWait, so an
// unreachable collector cannot hold the exit) and tells warn if that
// failed. Off, the tracer is nil and stop does nothing.
func Start(ctx context.Context, service, version string, console io.Writer, warn func(error)) (*Tracer, func(), error) {
	t, err := FromEnv(ctx, service, version, os.Getenv, console)
	if err != nil || t == nil {
		return nil, func() {}, err
	}
	return t, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownWait)
		defer cancel()
		if err := t.Shutdown(sctx); err != nil {
			warn(err)
		}
	}, nil
}

// shutdownWait bounds the last export at exit.
const shutdownWait = 5 * time.Second
