package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// BatchStored reports whether anything is stored for batch: a result, a
// job waiting or a dead letter, looked up in that order with STREAM.INFO
// alone (what a results-only account may ask, as long as the batch has
// results). A batch whose results and dead letters are past the results'
// max age is forgotten.
func BatchStored(ctx context.Context, js jetstream.JetStream, names Names, batch string) (bool, error) {
	for _, s := range []struct{ stream, subject string }{
		{names.ResultsStream(), names.ResultSubject(batch)},
		{names.JobsStream(), names.JobSubject(batch)},
		{names.DLQStream(), names.DLQSubject(batch)},
	} {
		st, err := js.Stream(ctx, s.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("stream %s: %w", s.stream, err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(s.subject))
		if err != nil {
			return false, fmt.Errorf("stream %s: %w", s.stream, err)
		}
		if info.State.Subjects[s.subject] > 0 {
			return true, nil
		}
	}
	return false, nil
}
