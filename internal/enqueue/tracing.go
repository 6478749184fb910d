package enqueue

import (
	"context"

	"github.com/jetpost/jetpost/internal/tracing"
)

// startTrace starts the run's span when tracing is on: the context to
// publish under, the headers every job message carries, and what ends the
// span once publishing is over, with the run's error (jobs not published
// included). Off, it returns ctx, no headers and a no-op.
func (r *runner) startTrace(ctx context.Context) (context.Context, map[string]string, func(*PublishReport, error)) {
	t := r.o.Tracer
	if t == nil {
		return ctx, nil, func(*PublishReport, error) {}
	}
	names := r.o.Names
	ctx, span, headers := t.StartRun(ctx, tracing.Run{
		Batch: r.o.Batch, Subject: names.JobSubject(r.o.Batch), Template: names.JobSubject("{batch}"), Start: r.start,
	})
	return ctx, headers, func(rep *PublishReport, err error) {
		published := 0
		if rep != nil {
			published = rep.Published
		}
		t.EndRun(span, published, err)
	}
}
