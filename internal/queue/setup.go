package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig is the shape of the streams and buckets, shared by every
// process that creates them.
type StreamConfig struct {
	Replicas      int
	DedupWindow   time.Duration // jobs: re-enqueued ids within it are dropped
	ResultsMaxAge time.Duration // results, dead letters and completion markers
	// AttemptsTTL bounds how long attempt counts are remembered; it must
	// outlive the longest a job can wait (the maximum job age).
	AttemptsTTL time.Duration
}

// resultsDedupWindow must cover the time between storing a result and a
// redelivered copy of the same job storing it again (ack wait plus a retry
// delay), so a job whose ack was lost cannot store a second result.
const resultsDedupWindow = 30 * time.Minute

// Setup creates the streams and the done bucket, or updates them to cfg,
// idempotently: whichever process starts first does it and the others find
// them ready. NewConsumer creates the attempts bucket, OpenBreakerBoard the
// breakers bucket.
func Setup(ctx context.Context, js jetstream.JetStream, n Names, cfg StreamConfig) error {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	streams := []jetstream.StreamConfig{{
		Name:        n.JobsStream(),
		Description: "jetpost jobs waiting or in progress",
		Subjects:    []string{n.JobSubject(anyBatch)},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DedupWindow,
	}, {
		Name:        n.ResultsStream(),
		Description: "jetpost results, one per job",
		Subjects:    []string{n.ResultSubject(anyBatch)},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.ResultsMaxAge,
		Duplicates:  min(resultsDedupWindow, cfg.ResultsMaxAge),
	}, {
		Name:        n.DLQStream(),
		Description: "jetpost dead letters: finally failed or undecodable jobs",
		Subjects:    []string{n.DLQSubject(anyBatch)},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.ResultsMaxAge,
		Duplicates:  min(resultsDedupWindow, cfg.ResultsMaxAge),
	}}
	for _, sc := range streams {
		if err := ensureStream(ctx, js, sc); err != nil {
			return fmt.Errorf("creating stream %s: %w", sc.Name, err)
		}
	}
	return SetupDone(ctx, js, n, cfg)
}

// ensureStream creates sc, or updates the stream to it, unless it is so
// already: a process that may only look at the streams (a producer, see
// README "Security") then needs no right to change them.
func ensureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	if s, err := js.Stream(ctx, sc.Name); err == nil && streamIs(s.CachedInfo().Config, sc) {
		return nil
	}
	_, err := js.CreateOrUpdateStream(ctx, sc)
	return err
}

// streamIs compares what Setup sets; the server fills in the rest.
func streamIs(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Retention == want.Retention &&
		have.Storage == want.Storage && have.Replicas == want.Replicas && have.Duplicates == want.Duplicates &&
		have.MaxAge == want.MaxAge && have.Description == want.Description
}

// SetupDone creates the done bucket, or updates its TTL, idempotently. The
// TTL is the results' max age: a marker is of no use once its result is gone.
func SetupDone(ctx context.Context, js jetstream.JetStream, n Names, cfg StreamConfig) error {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	kvc := jetstream.KeyValueConfig{
		Bucket:      n.DoneBucket(),
		Description: "jetpost: completed jobs (by job id hash) and where their results are",
		TTL:         cfg.ResultsMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}
	// As for the streams: a bucket already so is left alone.
	if s, err := js.Stream(ctx, "KV_"+kvc.Bucket); err == nil {
		have := s.CachedInfo().Config
		if have.MaxAge == kvc.TTL && have.Replicas == kvc.Replicas && have.Storage == kvc.Storage && have.Description == kvc.Description {
			return nil
		}
	}
	_, err := js.CreateOrUpdateKeyValue(ctx, kvc)
	if err != nil {
		return fmt.Errorf("creating bucket %s: %w", n.DoneBucket(), err)
	}
	return nil
}

// IsNotFound reports whether err means a stream or consumer is missing, as
// after a server lost its state.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound)
}
