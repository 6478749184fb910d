package queue

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// attemptsBucket opens the bucket of attempt counts, creating it or
// bringing it to cfg (EnsureStores made it already in a worker).
func attemptsBucket(ctx context.Context, js jetstream.JetStream, n Names, cfg StreamConfig) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	if _, err := ensure(ctx, js, bucketStore(js, attemptsBucketConfig(n, cfg), &kv), cfg.Replicas, DefaultCallTimeout); err != nil {
		return nil, err
	}
	return kv, nil
}

func attemptsBucketConfig(n Names, cfg StreamConfig) jetstream.KeyValueConfig {
	ttl := cfg.AttemptsTTL
	if ttl <= 0 {
		ttl = 48 * time.Hour
	}
	return jetstream.KeyValueConfig{
		Bucket:      n.AttemptsBucket(),
		Description: "jetpost: HTTP attempts spent per job (by stream sequence)",
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
	}
}

// attemptsRecord is what the attempts bucket keeps per job message: a bare
// number while nothing was turned away (the form every worker version
// reads), JSON otherwise.
type attemptsRecord struct {
	Attempts   int `json:"attempts"`
	TurnedAway int `json:"turned_away,omitempty"`
	// Trace: the traceparent of the delivery that recorded it (tracing).
	Trace string `json:"trace,omitempty"`
}

func (r attemptsRecord) encode() []byte {
	if r.TurnedAway == 0 && r.Trace == "" {
		return []byte(strconv.Itoa(r.Attempts))
	}
	b, _ := json.Marshal(r) // ints and a string: cannot fail
	return b
}

func decodeAttempts(b []byte) (attemptsRecord, error) {
	var r attemptsRecord
	if len(b) > 0 && b[0] == '{' {
		err := json.Unmarshal(b, &r)
		return r, err
	}
	n, err := strconv.Atoi(string(b))
	return attemptsRecord{Attempts: n}, err
}

func (c *Consumer) loadAttempts(ctx context.Context, seq uint64) (attemptsRecord, error) {
	e, err := c.kv.Get(ctx, strconv.FormatUint(seq, 10))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return attemptsRecord{}, nil
	}
	if err != nil {
		return attemptsRecord{}, err
	}
	return decodeAttempts(e.Value())
}

// recordAttempts stores the counts a NakAfterAttempt or a breaker's
// turn-away (NakAfter) spent.
// Counts never go down, so a decision that leaves one out keeps the
// delivery's.
func (c *Consumer) recordAttempts(ctx context.Context, d *Delivery, dec Decision) attemptsRecord {
	rec := attemptsRecord{Attempts: max(dec.Attempts, d.Attempts), TurnedAway: max(dec.TurnedAway, d.TurnedAway), Trace: cmp.Or(d.Trace, d.PrevTrace)}
	if _, err := c.kv.Put(ctx, strconv.FormatUint(d.Seq, 10), rec.encode()); err != nil {
		c.deliveryEvent(c.log.Warn(), d).Err(err).Msg("recording attempts failed")
	}
	return rec
}
