package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// resultsDedupWindow must cover the time between storing a result and a
// redelivered copy of the same job storing it again (ack wait plus a retry
// delay), so a job whose ack was lost cannot store a second result.
const resultsDedupWindow = 30 * time.Minute

// Setup creates the streams, or updates them to cfg, idempotently:
// whichever process starts first does it and the others find them ready.
func Setup(ctx context.Context, js jetstream.JetStream, n Names, cfg StreamConfig) error {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	streams := []jetstream.StreamConfig{{
		Name:        n.JobsStream(),
		Description: "jetpost jobs waiting or in progress",
		Subjects:    []string{n.Prefix + ".jobs.>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DedupWindow,
	}, {
		Name:        n.ResultsStream(),
		Description: "jetpost results, one per job",
		Subjects:    []string{n.Prefix + ".results.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.ResultsMaxAge,
		Duplicates:  min(resultsDedupWindow, cfg.ResultsMaxAge),
	}, {
		Name:        n.DLQStream(),
		Description: "jetpost dead letters: finally failed or undecodable jobs",
		Subjects:    []string{n.Prefix + ".dlq.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.ResultsMaxAge,
		Duplicates:  min(resultsDedupWindow, cfg.ResultsMaxAge),
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("creating stream %s: %w", sc.Name, err)
		}
	}
	// Completion markers: workers write them, enqueue reads them.
	return SetupDone(ctx, js, n, cfg)
}

// attemptsBucket opens (creating if needed) the bucket of attempt counts.
func attemptsBucket(ctx context.Context, js jetstream.JetStream, n Names, cfg StreamConfig) (jetstream.KeyValue, error) {
	ttl := cfg.AttemptsTTL
	if ttl <= 0 {
		ttl = 48 * time.Hour
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      n.AttemptsBucket(),
		Description: "jetpost: HTTP attempts spent per job (by stream sequence)",
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("creating bucket %s: %w", n.AttemptsBucket(), err)
	}
	return kv, nil
}

// IsNotFound reports whether err means a stream or consumer is missing, as
// after a server lost its state.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound)
}
