package queue

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BatchStatus is where one batch stands.
type BatchStatus struct {
	Batch string `json:"batch"`
	// Open counts the batch's jobs still on the jobs stream: waiting,
	// deferred for a retry, or in flight.
	Open        uint64 `json:"open"`
	Results     uint64 `json:"results"`      // results stored
	DeadLetters uint64 `json:"dead_letters"` // failed jobs currently in the dead-letter stream
}

// Overview is the state of the whole system as JetStream sees it.
type Overview struct {
	Batches []BatchStatus `json:"batches"`
	// Lag is the number of jobs no worker has been handed yet.
	Lag uint64 `json:"lag"`
	// Unacked counts jobs handed to workers and not yet settled, including
	// those waiting out a retry delay.
	Unacked int `json:"unacked"`
	// PullsWaiting counts workers' pull requests waiting for jobs.
	PullsWaiting int            `json:"pulls_waiting"`
	Breakers     []BreakerEntry `json:"breakers"`
}

// Status gathers the overview; batch "" means every batch.
func Status(ctx context.Context, js jetstream.JetStream, n Names, batch string) (Overview, error) {
	var o Overview
	tok := ">"
	if batch != "" {
		tok = batch
	}
	byBatch := map[string]*BatchStatus{}
	get := func(b string) *BatchStatus {
		if s, ok := byBatch[b]; ok {
			return s
		}
		s := &BatchStatus{Batch: b}
		byBatch[b] = s
		return s
	}
	for _, src := range []struct {
		stream, subject string
		add             func(*BatchStatus, uint64)
	}{
		{n.JobsStream(), n.Prefix + ".jobs." + tok, func(s *BatchStatus, c uint64) { s.Open += c }},
		{n.ResultsStream(), n.Prefix + ".results." + tok, func(s *BatchStatus, c uint64) { s.Results += c }},
		{n.DLQStream(), n.Prefix + ".dlq." + tok, func(s *BatchStatus, c uint64) { s.DeadLetters += c }},
	} {
		st, err := js.Stream(ctx, src.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return o, fmt.Errorf("stream %s: %w", src.stream, err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(src.subject))
		if err != nil {
			return o, fmt.Errorf("stream %s: %w", src.stream, err)
		}
		for subj, c := range info.State.Subjects {
			parts := strings.SplitN(subj, ".", 3)
			if len(parts) == 3 {
				src.add(get(parts[2]), c)
			}
		}
	}
	if batch != "" {
		get(batch)
	}
	for _, s := range byBatch {
		o.Batches = append(o.Batches, *s)
	}
	sort.Slice(o.Batches, func(i, j int) bool { return o.Batches[i].Batch < o.Batches[j].Batch })

	if c, err := js.Consumer(ctx, n.JobsStream(), n.Consumer()); err == nil {
		if ci, err := c.Info(ctx); err == nil {
			o.Lag = ci.NumPending
			o.Unacked = ci.NumAckPending
			o.PullsWaiting = ci.NumWaiting
		}
	}
	board, err := OpenBreakerBoard(ctx, js, n, 0)
	if err == nil {
		o.Breakers, err = board.List(ctx)
	}
	if err != nil {
		return o, err
	}
	return o, nil
}

// BreakerEntry is one worker's report of one host's breaker.
type BreakerEntry struct {
	Host   string    `json:"host"`
	Worker string    `json:"worker"`
	State  string    `json:"state"`
	Since  time.Time `json:"since"`
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
	name := n.upper() + "_BREAKERS"
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
	if e.State == "closed" {
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
