package queue

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// BreakerEntry is one worker's report of one host's breaker.
type BreakerEntry struct {
	Host   string           `json:"host"`
	Worker string           `json:"worker"`
	State  job.BreakerState `json:"state"`
	Since  time.Time        `json:"since"`
}

// BreakerBoard shares breaker states across workers through a KV bucket,
// so one command can say which hosts are cut off fleet-wide without
// scraping every worker. Entries expire (TTL) so a crashed worker's reports
// fade away. The board is auxiliary: while its bucket is missing, a
// worker's reports wait (the latest per host) and are written once it is
// there.
type BreakerBoard struct {
	kv func(context.Context) (jetstream.KeyValue, error)

	mu     sync.Mutex
	unsent map[string]BreakerEntry // by key, while the bucket is missing
}

// DefaultBreakerTTL bounds how long an open-breaker report outlives the
// worker that wrote it.
const DefaultBreakerTTL = time.Hour

// maxUnsent bounds the reports kept while the bucket is missing; past it
// the oldest information is the least useful, and status shows a subset.
const maxUnsent = 1000

// BreakerBucketConfig is the breakers bucket's shape (ttl 0:
// DefaultBreakerTTL); Replicas is set by setup.
func BreakerBucketConfig(n Names, ttl time.Duration) jetstream.KeyValueConfig {
	if ttl <= 0 {
		ttl = DefaultBreakerTTL
	}
	return jetstream.KeyValueConfig{
		Bucket: n.BreakersBucket(), Description: "jetpost: circuit breakers that are not closed, per host and worker",
		TTL: ttl, Storage: jetstream.FileStorage,
	}
}

// NewBreakerBoard is the workers' board on an auxiliary bucket
// (BreakerBucketConfig).
func NewBreakerBoard(aux *AuxBucket) *BreakerBoard {
	b := &BreakerBoard{
		kv:     func(context.Context) (jetstream.KeyValue, error) { return aux.KV() },
		unsent: map[string]BreakerEntry{},
	}
	aux.OnBind(b.flushUnsent)
	return b
}

// OpenBreakerBoard sets the bucket up with replicas (at least) and returns
// its board.
func OpenBreakerBoard(ctx context.Context, js jetstream.JetStream, n Names, replicas int) (*BreakerBoard, error) {
	var kv jetstream.KeyValue
	if _, err := ensure(ctx, js, bucketStore(js, BreakerBucketConfig(n, 0), &kv), replicas, DefaultCallTimeout); err != nil {
		return nil, err
	}
	return &BreakerBoard{kv: func(context.Context) (jetstream.KeyValue, error) { return kv, nil }, unsent: map[string]BreakerEntry{}}, nil
}

// ReadBreakerBoard is the board for readers (enqueue): it never creates
// the bucket, and lists nothing while no worker has.
func ReadBreakerBoard(js jetstream.JetStream, n Names) *BreakerBoard {
	var mu sync.Mutex
	var bound jetstream.KeyValue
	return &BreakerBoard{kv: func(ctx context.Context) (jetstream.KeyValue, error) {
		mu.Lock()
		defer mu.Unlock()
		if bound != nil {
			return bound, nil
		}
		kv, err := js.KeyValue(ctx, n.BreakersBucket())
		if err == nil {
			bound = kv
		}
		return kv, err
	}}
}

func breakerKey(host, worker string) string {
	return hex.EncodeToString([]byte(host)) + "." + hex.EncodeToString([]byte(worker))
}

// Report records a breaker state; a closed breaker removes the entry. While
// the bucket is missing, the report is kept for when it is there.
func (b *BreakerBoard) Report(ctx context.Context, e BreakerEntry) error {
	kv, err := b.kv(ctx)
	if errors.Is(err, ErrAuxUnavailable) {
		b.keep(e)
		return nil
	}
	if err != nil {
		return err
	}
	return report(ctx, kv, e)
}

func (b *BreakerBoard) keep(e BreakerEntry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.unsent[breakerKey(e.Host, e.Worker)]; !ok && len(b.unsent) >= maxUnsent {
		return
	}
	b.unsent[breakerKey(e.Host, e.Worker)] = e
}

// flushUnsent writes the reports kept while the bucket was missing.
func (b *BreakerBoard) flushUnsent(ctx context.Context, kv jetstream.KeyValue) {
	b.mu.Lock()
	unsent := b.unsent
	b.unsent = map[string]BreakerEntry{}
	b.mu.Unlock()
	for _, e := range unsent {
		if err := report(ctx, kv, e); err != nil {
			b.keep(e) // a later Report of the host writes it
		}
	}
}

func report(ctx context.Context, kv jetstream.KeyValue, e BreakerEntry) error {
	key := breakerKey(e.Host, e.Worker)
	if e.State == job.BreakerClosed {
		err := kv.Delete(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		return err
	}
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, key, v)
	return err
}

// List returns every breaker reported not closed, by host; none while no
// worker has created the bucket.
func (b *BreakerBoard) List(ctx context.Context) ([]BreakerEntry, error) {
	kv, err := b.kv(ctx)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	var out []BreakerEntry
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue // deleted or expired meanwhile
		}
		var be BreakerEntry
		if json.Unmarshal(e.Value(), &be) == nil {
			out = append(out, be)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].Worker < out[j].Worker
	})
	return out, nil
}
