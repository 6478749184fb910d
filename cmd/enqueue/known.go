package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/queue"
)

// batchStored reports whether anything is stored for batch: a result, a
// job waiting or a dead letter, looked up in that order with STREAM.INFO
// alone (what a results-only account may ask, as long as the batch has
// results). A batch whose results and dead letters are past
// JETPOST_RESULTS_MAX_AGE is forgotten.
func batchStored(ctx context.Context, js jetstream.JetStream, names queue.Names, batch string) (bool, error) {
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

// checkBatchKnown fails with exit status 4 when nothing is stored for
// batch and it has no entry in the batches bucket, so that a typo in a
// batch id is not taken for a batch with nothing to show.
func checkBatchKnown(ctx context.Context, js jetstream.JetStream, names queue.Names, batch string, maxAge time.Duration) error {
	known, err := batchStored(ctx, js, names, batch)
	if err != nil {
		return &exitError{exitBroker, err}
	}
	if known {
		return nil
	}
	// Asked only now: credentials without the bucket still see the
	// streams.
	if _, ok, err := queue.BatchEntry(ctx, js, names, batch); err == nil && ok {
		return nil
	}
	return unknownBatch(batch, maxAge)
}

func unknownBatch(batch string, maxAge time.Duration) error {
	return &exitError{exitUnknownBatch, fmt.Errorf("unknown batch %s: no jobs, results or dead letters are stored for it (a typo? a batch is forgotten once older than JETPOST_RESULTS_MAX_AGE=%s; enqueue status lists them all)", oneLine(batch), maxAge)}
}
