// Package fleetrate is the NATS side of jetpost's host limits: it keeps the
// state of the fleet-wide rate limits (pkg/hostlimit.Buckets) in a
// JetStream key-value bucket that every worker updates with
// compare-and-swap, and it shares each worker's per-host limits on a board
// that `enqueue status` and operators can read. pkg/hostlimit stays free of
// NATS; this package is the only place the two meet.
//
// # When NATS is unreachable
//
// A worker that cannot update the bucket (NATS unreachable, or the bucket
// not set up yet: it is retried in the background) sends nothing to
// rate-limited hosts: their jobs are deferred (about a second at a time, no attempt
// spent) until the bucket answers again. Tokens a worker already leased
// (at most a tenth of a second's worth) lapse within a fraction of a
// second. Hosts without a rate limit keep going as long as the worker can
// still settle jobs. The bucket is kept in memory on the server: a
// restarted server starts every limit with a full burst, which is the most
// it can be exceeded by.
package fleetrate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/hostlimit"
)

// Bucket is the key-value bucket of the rate limits for a subject prefix,
// named like the prefix's streams ("jetpost" → "JETPOST_RATES").
func Bucket(prefix string) string { return queue.NewNames(prefix).RatesBucket() }

// stateTTL is how long a limit's state outlives its last write. The state
// matters until the burst is earned back, at most hostlimit.MaxSpan after
// it (ParseRate refuses slower rates and longer bursts, and the limiter
// saturates there); forgotten any sooner, a slow limit would start again
// with a full burst. The margin covers clocks a little apart.
const stateTTL = hostlimit.MaxSpan + time.Hour

// maxTries bounds compare-and-swap retries under contention; each failed
// try means another worker got its lease, so the fleet makes progress.
const maxTries = 16

// Store is hostlimit.Buckets in a JetStream key-value bucket, shared by
// every worker of a fleet. It is safe for concurrent use. While the bucket
// cannot be set up, Update fails and rate-limited hosts get nothing (see
// the package comment); the bucket is retried in the background (Run).
type Store struct {
	aux *queue.AuxBucket

	// last caches the entries this process wrote: under little contention
	// the next lease is one Update round trip instead of Get and Update. A
	// stale entry only costs a conflict and a re-read (a limit's state only
	// moves forward, so a stale one never grants more than is there).
	mu   sync.Mutex
	last map[string]entry
}

type entry struct {
	value []byte
	rev   uint64
}

// BucketConfig is the rate bucket's shape; replicas follow the streams'.
func BucketConfig(bucket string) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "jetpost: state of the fleet-wide rate limits per host (GCRA theoretical arrival times)",
		History:     1,
		TTL:         stateTTL,
		Storage:     jetstream.MemoryStorage,
	}
}

// NewStore returns the store on the bucket of BucketConfig; the caller
// sets it up (TryOnce) and runs its retries (Run).
func NewStore(aux *queue.AuxBucket) *Store {
	return &Store{aux: aux, last: map[string]entry{}}
}

// Open sets the bucket up once and returns its store; an error if it
// cannot (a worker uses NewStore, which does without it meanwhile).
func Open(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*Store, error) {
	aux := queue.NewAuxBucket(js, BucketConfig(bucket), queue.AuxOptions{Replicas: replicas, Log: zerolog.Nop()})
	if err := aux.TryOnce(ctx); err != nil {
		return nil, fmt.Errorf("rate limit bucket %s: %w", bucket, err)
	}
	return NewStore(aux), nil
}

var _ hostlimit.Buckets = (*Store)(nil)

// Update implements hostlimit.Buckets with compare-and-swap on the key's
// revision.
func (s *Store) Update(ctx context.Context, key string, fn func(cur []byte) ([]byte, error)) error {
	kv, err := s.aux.KV()
	if err != nil {
		return err
	}
	s.mu.Lock()
	e, known := s.last[key]
	s.mu.Unlock()
	for try := 0; try < maxTries; try++ {
		if !known {
			got, err := kv.Get(ctx, key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				e = entry{}
			case err != nil:
				s.forget(key)
				return err
			default:
				e = entry{value: got.Value(), rev: got.Revision()}
			}
			known = true
		}
		next, err := fn(e.value)
		if err != nil || next == nil {
			return err
		}
		var rev uint64
		if e.rev == 0 {
			rev, err = kv.Create(ctx, key, next)
		} else {
			rev, err = kv.Update(ctx, key, next, e.rev)
		}
		if err == nil {
			s.mu.Lock()
			s.last[key] = entry{value: next, rev: rev}
			if len(s.last) > 10000 {
				// Bounded like the limiter's own state; the cache refills.
				clear(s.last)
			}
			s.mu.Unlock()
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			s.forget(key)
			return err
		}
		known = false // someone else moved it: read it again
	}
	return fmt.Errorf("rate limit state %s: still contended after %d tries", key, maxTries)
}

func (s *Store) forget(key string) {
	s.mu.Lock()
	delete(s.last, key)
	s.mu.Unlock()
}
