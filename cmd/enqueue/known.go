package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/queue"
)

// checkBatchKnown fails with exit status 4 when nothing is stored for
// batch and it has no entry in the batches bucket, so that a typo in a
// batch id is not taken for a batch with nothing to show.
func checkBatchKnown(ctx context.Context, js jetstream.JetStream, names queue.Names, batch string, maxAge time.Duration) error {
	known, err := queue.BatchKnown(ctx, js, names, batch)
	if err != nil {
		return &exitError{exitBroker, err}
	}
	if known {
		return nil
	}
	return unknownBatch(batch, maxAge)
}

func unknownBatch(batch string, maxAge time.Duration) error {
	return &exitError{exitUnknownBatch, fmt.Errorf("unknown batch %s: no jobs, results or dead letters are stored for it (a typo? a batch is forgotten once older than JETPOST_RESULTS_MAX_AGE=%s; enqueue status lists them all)", oneLine(batch), maxAge)}
}
