package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/queue"
)

// checkBatchKnown fails with exit status 4 when batch is unknown: no job
// waiting, no result and no dead letter stored for it, so that a typo in a
// batch id is not taken for a batch with nothing to show. What is past
// JETPOST_RESULTS_MAX_AGE is forgotten, and so is its batch.
func checkBatchKnown(ctx context.Context, js jetstream.JetStream, names queue.Names, batch string, maxAge time.Duration) error {
	for _, s := range []struct{ stream, subject string }{
		{names.JobsStream(), names.JobSubject(batch)},
		{names.ResultsStream(), names.ResultSubject(batch)},
		{names.DLQStream(), names.DLQSubject(batch)},
	} {
		st, err := js.Stream(ctx, s.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return &exitError{exitBroker, fmt.Errorf("stream %s: %w", s.stream, err)}
		}
		_, err = st.GetLastMsgForSubject(ctx, s.subject)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return &exitError{exitBroker, fmt.Errorf("stream %s: %w", s.stream, err)}
		}
	}
	return &exitError{exitUnknownBatch, fmt.Errorf("unknown batch %s: no jobs, results or dead letters stored for it (a typo? batches older than JETPOST_RESULTS_MAX_AGE=%s are forgotten; enqueue status lists them)", oneLine(batch), maxAge)}
}
