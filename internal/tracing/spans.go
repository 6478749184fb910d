package tracing

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetpost/jetpost/pkg/job"
)

// Attribute keys of jetpost's own (semantic conventions have none for
// them). Values never hold a secret: URLs go through job.RedactURL, and
// no header value is ever recorded.
const (
	AttrBatch     = attribute.Key("jetpost.batch")
	AttrJobID     = attribute.Key("jetpost.job.id")
	AttrDelivery  = attribute.Key("jetpost.delivery")
	AttrAttempts  = attribute.Key("jetpost.attempts")
	AttrDecision  = attribute.Key("jetpost.decision")
	AttrOK        = attribute.Key("jetpost.ok")
	AttrReason    = attribute.Key("jetpost.reason")
	AttrWorker    = attribute.Key("jetpost.worker")
	AttrLinkType  = attribute.Key("jetpost.link.type")
	AttrPublished = attribute.Key("jetpost.published")
)

// Link types (AttrLinkType on a delivery span's links).
const (
	// LinkCreation points at the context the job message carries: the
	// enqueue run's span.
	LinkCreation = "creation"
	// LinkPrevious points at the delivery of the same job that last spent
	// an attempt or a try (a retry, here or on another worker).
	LinkPrevious = "previous_delivery"
)

// messagingSystem names the broker in messaging.system (the conventions
// list no value for NATS).
var messagingSystem = semconv.MessagingSystemKey.String("nats")

// Run is one enqueue run: the batch and the subject its jobs go to.
type Run struct {
	Batch   string
	Subject string // e.g. jetpost.jobs.b1
	// Template is the subject with the batch left out, e.g.
	// jetpost.jobs.{batch}: the span's name, so names stay few.
	Template string
	// Start is when the run began (validation included); zero: now.
	Start time.Time
}

// StartRun starts the producer span of one enqueue run: a child of the
// context the process was started under (TRACEPARENT), else a root. The
// headers returned (the span's context) go on every job message: one
// context for the whole run, not one span per job, so that a run of a
// million jobs costs one span and the same two header values.
func (t *Tracer) StartRun(ctx context.Context, r Run) (context.Context, trace.Span, map[string]string) {
	if t.env.IsValid() && !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, t.env)
	}
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(messagingSystem, semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("enqueue"), semconv.MessagingDestinationName(r.Subject),
			semconv.MessagingDestinationTemplate(r.Template), AttrBatch.String(r.Batch)),
	}
	if !r.Start.IsZero() {
		opts = append(opts, trace.WithTimestamp(r.Start))
	}
	ctx, span := t.tr.Start(ctx, "send "+r.Template, opts...)
	return ctx, span, t.Headers(span.SpanContext())
}

// EndRun ends a run's span with how many jobs it published.
func (t *Tracer) EndRun(span trace.Span, published int, err error) {
	span.SetAttributes(semconv.MessagingBatchMessageCount(published), AttrPublished.Int(published))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Delivery is one delivery of a job message to a worker.
type Delivery struct {
	Batch, JobID string
	Subject      string
	Template     string
	Worker       string
	// MessageParent and MessageState are the job message's traceparent
	// and tracestate headers (its creation context: the enqueue run's).
	MessageParent, MessageState string
	// JobParent and JobState are the job's own traceparent and tracestate
	// request headers, when its author set them.
	JobParent, JobState string
	// Previous is the traceparent of the delivery that last spent an
	// attempt or a try on this job, "" if none did.
	Previous  string
	Delivered uint64 // deliveries so far, this one included
	Attempts  int    // HTTP attempts earlier deliveries spent
}

// StartDelivery starts the consumer span of a delivery. Its parent is the
// job's own traceparent when the job has one (its author asked for the
// request to join that trace), else the job message's creation context;
// it links to the creation context and to the previous delivery.
func (t *Tracer) StartDelivery(ctx context.Context, d Delivery) (context.Context, trace.Span) {
	created := t.extract(d.MessageParent, d.MessageState)
	parent := t.extract(d.JobParent, d.JobState)
	if !parent.IsValid() {
		parent = created
	}
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	var links []trace.Link
	if created.IsValid() {
		links = append(links, trace.Link{SpanContext: created, Attributes: []attribute.KeyValue{AttrLinkType.String(LinkCreation)}})
	}
	if prev := t.extract(d.Previous, ""); prev.IsValid() {
		links = append(links, trace.Link{SpanContext: prev, Attributes: []attribute.KeyValue{AttrLinkType.String(LinkPrevious)}})
	}
	return t.tr.Start(ctx, "process "+d.Template,
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...),
		trace.WithAttributes(messagingSystem, semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"), semconv.MessagingDestinationName(d.Subject),
			semconv.MessagingDestinationTemplate(d.Template), semconv.MessagingMessageID(d.JobID),
			AttrBatch.String(d.Batch), AttrJobID.String(d.JobID), AttrWorker.String(d.Worker),
			AttrDelivery.Int64(int64(min(d.Delivered, 1<<62))), AttrAttempts.Int(d.Attempts)))
}

// Outcome is what a delivery decided, for its span.
type Outcome struct {
	Decision string // the queue action's name: complete, retry, defer, hand-back
	Attempts int    // attempts spent so far, this delivery's included
	// Finished: the job has its result, OK or not (Reason, Error).
	Finished bool
	OK       bool
	Reason   string
	Error    string // never holds a secret (the sender's errors do not)
}

// EndDelivery ends a delivery's span with its decision.
func (t *Tracer) EndDelivery(span trace.Span, o Outcome) {
	span.SetAttributes(AttrDecision.String(o.Decision), AttrAttempts.Int(o.Attempts))
	if o.Finished {
		span.SetAttributes(AttrOK.Bool(o.OK))
		if !o.OK {
			span.SetAttributes(AttrReason.String(o.Reason))
			span.SetStatus(codes.Error, o.Error)
		}
	}
	span.End()
}

// StartCallback starts the span of a job's result callback: every POST
// of it (a client span each) is its child.
func (t *Tracer) StartCallback(ctx context.Context, url string) (context.Context, trace.Span) {
	return t.tr.Start(ctx, "callback", trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(semconv.URLFull(job.RedactURL(url))))
}

// EndCallback ends a callback's span with how it went.
func (t *Tracer) EndCallback(span trace.Span, cr *job.CallbackResult) {
	span.SetAttributes(AttrOK.Bool(cr.OK), AttrAttempts.Int(cr.Attempts))
	if cr.Status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(cr.Status))
	}
	if !cr.OK {
		span.SetStatus(codes.Error, cr.Error)
	}
	span.End()
}
