package queue

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/pkg/retry"
)

// StreamConfig is the shape of the streams and buckets, shared by every
// process that creates them.
type StreamConfig struct {
	// Replicas is JETPOST_REPLICAS: every stream and bucket is created
	// with it, and raised to it if it has fewer (never lowered).
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

// SetupOptions say how EnsureStores tries.
type SetupOptions struct {
	// CallTimeout bounds each JetStream call (DefaultCallTimeout if 0).
	CallTimeout time.Duration
	// Attempts: the attempts bucket too, which only workers use.
	Attempts bool
	// Pause is the wait after failed pass n (from 1); nil: setupPause.
	Pause func(n int) time.Duration
	Log   zerolog.Logger
}

// setupPause spreads processes started together: they must not collide
// again on every try.
func setupPause(n int) time.Duration {
	return retry.Linear(n, 250*time.Millisecond, 3*time.Second) + rand.N(500*time.Millisecond)
}

// EnsureStores brings the streams and buckets a job needs to their shape
// and JETPOST_REPLICAS, trying again until they are all there or ctx ends.
// A store set up stays set up across tries, each failure names the store
// and why, and a store left with fewer replicas than asked is a warning,
// not a failure (it works meanwhile).
func EnsureStores(ctx context.Context, js jetstream.JetStream, n Names, cfg StreamConfig, o SetupOptions) error {
	stores := essentialStores(js, n, cfg, o.Attempts)
	pause := o.Pause
	if pause == nil {
		pause = setupPause
	}
	done := 0
	return retry.Do(ctx, retry.Policy{
		// Each call is bounded on its own; a pass may take one per store.
		PerTry: time.Duration(3*len(stores)) * max(o.CallTimeout, DefaultCallTimeout),
		Pause:  pause,
		Final:  IsSetupFinal,
		OnRetry: func(err error, try int) {
			o.Log.Warn().Err(err).Int("try", try).Int("ready", done).Int("of", len(stores)).
				Msg("setting up streams and buckets failed; retrying")
		},
	}, func(ctx context.Context) error {
		for ; done < len(stores); done++ {
			short, err := ensure(ctx, js, stores[done], cfg.Replicas, o.CallTimeout)
			if err != nil {
				return err
			}
			if short != nil {
				o.Log.Warn().Str("store", short.Store).Int("replicas", short.Have).Int("want", short.Want).
					Err(short.Err).Msg(short.Error())
			}
		}
		return nil
	})
}

// Setup is one pass of EnsureStores without the attempts bucket: the
// streams and the done bucket, created or brought to cfg.
func Setup(ctx context.Context, js jetstream.JetStream, n Names, cfg StreamConfig) error {
	for _, s := range essentialStores(js, n, cfg, false) {
		if _, err := ensure(ctx, js, s, cfg.Replicas, DefaultCallTimeout); err != nil {
			return err
		}
	}
	return nil
}

// SetupDone creates the done bucket, or brings it to cfg.
func SetupDone(ctx context.Context, js jetstream.JetStream, n Names, cfg StreamConfig) error {
	_, err := ensure(ctx, js, bucketStore(js, doneBucketConfig(n, cfg), nil), cfg.Replicas, DefaultCallTimeout)
	return err
}

// essentialStores are what a job needs: the three streams, the done and
// batches buckets and, for workers, the attempts bucket.
func essentialStores(js jetstream.JetStream, n Names, cfg StreamConfig, attempts bool) []store {
	var out []store
	for _, sc := range streamConfigs(n, cfg) {
		out = append(out, streamStore(js, sc))
	}
	out = append(out, bucketStore(js, doneBucketConfig(n, cfg), nil), bucketStore(js, batchesBucketConfig(n), nil))
	if attempts {
		out = append(out, bucketStore(js, attemptsBucketConfig(n, cfg), nil))
	}
	return out
}

func streamConfigs(n Names, cfg StreamConfig) []jetstream.StreamConfig {
	return []jetstream.StreamConfig{{
		Name:        n.JobsStream(),
		Description: "jetpost jobs waiting or in progress",
		Subjects:    []string{n.JobSubject(anyBatch)},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  cfg.DedupWindow,
	}, {
		Name:        n.ResultsStream(),
		Description: "jetpost results, one per job",
		Subjects:    []string{n.ResultSubject(anyBatch)},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      cfg.ResultsMaxAge,
		Duplicates:  min(resultsDedupWindow, cfg.ResultsMaxAge),
	}, {
		Name:        n.DLQStream(),
		Description: "jetpost dead letters: finally failed or undecodable jobs",
		Subjects:    []string{n.DLQSubject(anyBatch)},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      cfg.ResultsMaxAge,
		Duplicates:  min(resultsDedupWindow, cfg.ResultsMaxAge),
	}}
}

// doneBucketConfig: the TTL is the results' max age, as a marker is of no
// use once its result is gone.
func doneBucketConfig(n Names, cfg StreamConfig) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      n.DoneBucket(),
		Description: "jetpost: completed jobs (by job id hash) and where their results are",
		TTL:         cfg.ResultsMaxAge,
		Storage:     jetstream.FileStorage,
	}
}

// IsNotFound reports whether err means a stream or consumer is missing, as
// after a server lost its state.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound)
}
