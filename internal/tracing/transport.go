package tracing

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetpost/jetpost/pkg/job"
)

// Transport wraps rt so that every request it sends (each hop of a
// redirect chain is one) gets a client span, child of the span in the
// request's context, and carries that span's context to the target as
// traceparent (replacing one the job set: its trace is continued, not
// dropped, since the job's own traceparent is the delivery's parent).
func (t *Tracer) Transport(rt http.RoundTripper) http.RoundTripper {
	return &transport{t: t, rt: rt}
}

type transport struct {
	t  *Tracer
	rt http.RoundTripper
}

func (tr *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, span := tr.t.tr.Start(req.Context(), req.Method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(semconv.HTTPRequestMethodKey.String(req.Method),
			semconv.URLFull(job.RedactURL(req.URL.String())),
			semconv.ServerAddress(req.URL.Hostname()), semconv.ServerPort(port(req))))
	// A RoundTripper must not change the request it was given.
	out := req.Clone(ctx)
	tr.t.prop.Inject(ctx, propagation.HeaderCarrier(out.Header))
	resp, err := tr.rt.RoundTrip(out)
	if err != nil {
		// The error's text may name the request; its kind is enough.
		kind := errorKind(err)
		span.SetAttributes(semconv.ErrorTypeKey.String(kind))
		span.SetStatus(codes.Error, kind)
		span.End()
		return nil, err
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(resp.StatusCode))
	if resp.StatusCode >= 400 {
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(resp.StatusCode)))
		span.SetStatus(codes.Error, "")
	}
	// The attempt lasts until its body is read and closed.
	resp.Body = &spanBody{ReadCloser: resp.Body, span: span}
	return resp, nil
}

// spanBody ends its span when the body is closed.
type spanBody struct {
	io.ReadCloser
	span trace.Span
	once sync.Once
}

func (b *spanBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { b.span.End() })
	return err
}

// port is the request's server port, the default of its scheme if none
// is named.
func port(req *http.Request) int {
	_, p, _ := net.SplitHostPort(job.HostKey(req.URL))
	n, _ := strconv.Atoi(p)
	return n
}

// errorKind names an error's kind for error.type.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, new(*net.OpError)):
		return "connection"
	}
	return "_OTHER"
}
