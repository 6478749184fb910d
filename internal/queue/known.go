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
		counts, err := subjectCounts(ctx, js, s.stream, s.subject)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("stream %s: %w", s.stream, err)
		}
		if counts[s.subject] > 0 {
			return true, nil
		}
	}
	return false, nil
}

// BatchKnown reports whether anything is stored for batch or it has an
// entry in the batches bucket, so that a typo in a batch id is not taken
// for a batch with nothing to show. The entry is asked for last:
// credentials without the bucket still see the streams.
func BatchKnown(ctx context.Context, js jetstream.JetStream, names Names, batch string) (bool, error) {
	stored, err := BatchStored(ctx, js, names, batch)
	if err != nil || stored {
		return stored, err
	}
	_, ok, err := BatchEntry(ctx, js, names, batch)
	return err == nil && ok, nil
}
