package queue

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
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
// fade away.
type BreakerBoard struct {
	kv jetstream.KeyValue
}

// DefaultBreakerTTL bounds how long an open-breaker report outlives the
// worker that wrote it.
const DefaultBreakerTTL = time.Hour

// OpenBreakerBoard opens or creates the bucket (ttl 0: DefaultBreakerTTL).
func OpenBreakerBoard(ctx context.Context, js jetstream.JetStream, n Names, ttl time.Duration) (*BreakerBoard, error) {
	if ttl <= 0 {
		ttl = DefaultBreakerTTL
	}
	name := n.BreakersBucket()
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, Description: "jetpost: circuit breakers that are not closed, per host and worker",
			TTL: ttl, Storage: jetstream.FileStorage,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("breaker bucket %s: %w", name, err)
	}
	return &BreakerBoard{kv: kv}, nil
}

func breakerKey(host, worker string) string {
	return hex.EncodeToString([]byte(host)) + "." + hex.EncodeToString([]byte(worker))
}

// Report records a breaker state; a closed breaker removes the entry.
func (b *BreakerBoard) Report(ctx context.Context, e BreakerEntry) error {
	key := breakerKey(e.Host, e.Worker)
	if e.State == job.BreakerClosed {
		err := b.kv.Delete(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		return err
	}
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = b.kv.Put(ctx, key, v)
	return err
}

// List returns every breaker reported not closed, by host.
func (b *BreakerBoard) List(ctx context.Context) ([]BreakerEntry, error) {
	lister, err := b.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []BreakerEntry
	for key := range lister.Keys() {
		e, err := b.kv.Get(ctx, key)
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
