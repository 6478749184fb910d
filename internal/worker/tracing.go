package worker

import (
	"context"
	"strings"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/tracing"
	"github.com/jetpost/jetpost/pkg/job"
)

// handleTraced is Handle inside a delivery span: the request's client
// span and the callback's span are its children, and its context is
// recorded with the job's attempts so that the next delivery links to it.
func (w *Worker) handleTraced(ctx context.Context, d *queue.Delivery) queue.Decision {
	t := w.cfg.Tracer
	j := d.Job
	subject := d.Subject()
	msgParent, msgState := d.TraceHeaders()
	jobParent, jobState := ownTraceHeaders(j.Headers)
	ctx, span := t.StartDelivery(ctx, tracing.Delivery{
		Batch: j.Batch, JobID: j.ID, Subject: subject, Template: subjectTemplate(subject, j.Batch), Worker: w.cfg.ID,
		MessageParent: msgParent, MessageState: msgState, JobParent: jobParent, JobState: jobState,
		Previous: d.PrevTrace, Delivered: d.NumDelivered, Attempts: d.Attempts,
	})
	dec := w.handle(ctx, d)
	d.Trace = t.Traceparent(span.SpanContext())
	o := tracing.Outcome{Decision: dec.Action.String(), Attempts: max(dec.Attempts, d.Attempts)}
	if r := dec.Result; dec.Action == queue.AckWithResult && r != nil {
		o.Finished, o.OK, o.Reason, o.Error, o.Attempts = true, r.OK, string(r.Reason), r.Error, r.Attempts
	}
	t.EndDelivery(span, o)
	return dec
}

// tracedCallback is callback inside a callback span when tracing is on.
func (w *Worker) tracedCallback(ctx context.Context, j *job.Job, r *job.Result) *job.CallbackResult {
	t := w.cfg.Tracer
	if t == nil {
		return w.callback(ctx, j, r)
	}
	ctx, span := t.StartCallback(ctx, j.Callback)
	cr := w.callback(ctx, j, r)
	t.EndCallback(span, cr)
	return cr
}

// ownTraceHeaders finds the job's own traceparent and tracestate request
// headers, whatever their case.
func ownTraceHeaders(h map[string]string) (traceparent, tracestate string) {
	for k, v := range h {
		switch {
		case strings.EqualFold(k, tracing.TraceparentHeader):
			traceparent = v
		case strings.EqualFold(k, tracing.TracestateHeader):
			tracestate = v
		}
	}
	return traceparent, tracestate
}

// subjectTemplate is a job subject with its batch left out
// (jetpost.jobs.{batch}), so that span names stay few.
func subjectTemplate(subject, batch string) string {
	if prefix, ok := strings.CutSuffix(subject, "."+batch); ok && batch != "" {
		return prefix + ".{batch}"
	}
	return subject
}
