package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// Batch control. Every batch may have an entry in the batches bucket,
// keyed by its name: its weight (its share of every worker's request
// places against the other active batches) and its state (running, paused,
// cancelled). enqueue writes it before it publishes the batch's jobs and
// when a user pauses, resumes or cancels the batch; workers watch the
// bucket. A batch without an entry (published by another producer) runs
// with the normal weight.

// BatchState is what a batch's jobs may do.
type BatchState string

const (
	// BatchRunning: its jobs are sent, in its share.
	BatchRunning BatchState = "running"
	// BatchPaused: no new request is sent; its jobs wait on the server.
	BatchPaused BatchState = "paused"
	// BatchCancelled: no request is sent any more; every job still open
	// ends with a result of reason "cancelled".
	BatchCancelled BatchState = "cancelled"
)

// Valid reports whether s is a known state.
func (s BatchState) Valid() bool {
	return s == BatchRunning || s == BatchPaused || s == BatchCancelled
}

// Priority names and their weights. A batch's share of request places is
// its weight over the sum of the weights of the batches with jobs ready:
// a high batch gets four times a normal one's share, and never all of it.
const (
	WeightLow    = 1
	WeightNormal = 4
	WeightHigh   = 16
	// MaxWeight bounds a numeric priority: at most 100 times the lowest.
	MaxWeight = 100
)

// ParsePriority reads --priority: high, normal, low, or a weight from 1 to
// MaxWeight ("" is normal).
func ParsePriority(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "normal":
		return WeightNormal, nil
	case "high":
		return WeightHigh, nil
	case "low":
		return WeightLow, nil
	}
	w, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || w < 1 || w > MaxWeight {
		return 0, fmt.Errorf("priority %q: want high, normal, low or a weight from 1 to %d (normal is %d, high %d, low %d)",
			s, MaxWeight, WeightNormal, WeightHigh, WeightLow)
	}
	return w, nil
}

// PriorityName is how a weight is shown: its name when it has one.
func PriorityName(weight int) string {
	switch weight {
	case WeightHigh:
		return "high"
	case WeightNormal:
		return "normal"
	case WeightLow:
		return "low"
	}
	return strconv.Itoa(weight)
}

// BatchControl is a batch's entry in the batches bucket.
type BatchControl struct {
	Batch   string     `json:"batch"`
	Weight  int        `json:"weight"`
	State   BatchState `json:"state"`
	Updated time.Time  `json:"updated"`
}

// DefaultBatchControl is what a batch without an entry gets.
func DefaultBatchControl(batch string) BatchControl {
	return BatchControl{Batch: batch, Weight: WeightNormal, State: BatchRunning}
}

func (b BatchControl) encode() []byte {
	out, _ := json.Marshal(b) // plain fields: cannot fail
	return out
}

// decodeBatchControl reads an entry; one that makes no sense is the
// default rather than a stuck batch.
func decodeBatchControl(batch string, data []byte) BatchControl {
	b := DefaultBatchControl(batch)
	var in BatchControl
	if json.Unmarshal(data, &in) != nil {
		return b
	}
	if in.Weight >= 1 && in.Weight <= MaxWeight {
		b.Weight = in.Weight
	}
	if in.State.Valid() {
		b.State = in.State
	}
	b.Updated = in.Updated
	return b
}

// BatchesBucket is the KV bucket of batch weights and states.
func (n Names) BatchesBucket() string { return n.upper() + "_BATCHES" }

// BatchConsumer is the durable pull consumer of the jobs published on
// subject: one per batch, so that a batch's jobs can be taken, paused and
// drained apart from every other's. A valid batch name is a valid consumer
// name; another subject (published by another producer, rejected by the
// worker as invalid) is named by a digest of it.
func (n Names) BatchConsumer(subject string) string {
	if b, ok := strings.CutPrefix(subject, n.JobSubject("")); ok && job.ValidBatch(b) {
		return "batch_" + b
	}
	return "subject_" + shortDigest(subject)
}

// batchControlSubject is where enqueue asks every worker to apply a batch's
// new state at once (core NATS request, many replies): the fence of pause
// and cancel.
func (n Names) batchControlSubject() string { return n.Prefix + ".fleet.batch" }

// batchFence is the request on batchControlSubject.
type batchFence struct {
	Batch    string `json:"batch"`
	Revision uint64 `json:"revision"` // the batches bucket's revision of the new state
}

// batchFenceReply is one worker's answer, sent once it applies the state
// of at least Revision: it starts no request for the batch from then on.
type batchFenceReply struct {
	Worker   string `json:"worker"`
	Revision uint64 `json:"revision"`
	// Running is how many of the batch's jobs this worker is still
	// handling (started before the fence; a request may be in flight).
	Running int `json:"running"`
}

func batchesBucketConfig(n Names) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      n.BatchesBucket(),
		Description: "jetpost: batch weights and states (running, paused, cancelled)",
		Storage:     jetstream.FileStorage,
	}
}

// Batches is the batches bucket.
type Batches struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// OpenBatches opens the batches bucket, creating it or bringing it to its
// shape and cfg.Replicas.
func OpenBatches(ctx context.Context, js jetstream.JetStream, n Names, cfg StreamConfig) (*Batches, error) {
	var kv jetstream.KeyValue
	if _, err := ensure(ctx, js, bucketStore(js, batchesBucketConfig(n), &kv), cfg.Replicas, DefaultCallTimeout); err != nil {
		return nil, err
	}
	return &Batches{kv: kv, now: time.Now}, nil
}

// Get returns batch's entry and its revision; a batch without one gets
// the default and revision 0.
func (b *Batches) Get(ctx context.Context, batch string) (BatchControl, uint64, error) {
	e, err := b.kv.Get(ctx, batch)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return DefaultBatchControl(batch), 0, nil
	}
	if err != nil {
		return BatchControl{}, 0, fmt.Errorf("reading batch %s: %w", batch, err)
	}
	return decodeBatchControl(batch, e.Value()), e.Revision(), nil
}

// Update changes batch's entry with change, atomically against concurrent
// updates (compare and set on the revision, tried again on a conflict), and
// returns the entry and revision written.
func (b *Batches) Update(ctx context.Context, batch string, change func(*BatchControl)) (BatchControl, uint64, error) {
	if !job.ValidBatch(batch) {
		return BatchControl{}, 0, fmt.Errorf("batch %q: not a batch name", batch)
	}
	for {
		cur, rev, err := b.Get(ctx, batch)
		if err != nil {
			return BatchControl{}, 0, err
		}
		change(&cur)
		cur.Batch, cur.Updated = batch, b.now().UTC()
		var nrev uint64
		if rev == 0 {
			nrev, err = b.kv.Create(ctx, batch, cur.encode())
		} else {
			nrev, err = b.kv.Update(ctx, batch, cur.encode(), rev)
		}
		if err == nil {
			return cur, nrev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongLastSequence(err) {
			return BatchControl{}, 0, fmt.Errorf("writing batch %s: %w", batch, err)
		}
		if ctx.Err() != nil {
			return BatchControl{}, 0, ctx.Err()
		}
	}
}

// isWrongLastSequence: another writer updated the key first.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// shortDigest names something by 16 hex digits of its SHA-256.
func shortDigest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// Forget deletes batch's entry if it is still at revision rev (so an
// update made meanwhile wins): for a batch with nothing left to do.
func (b *Batches) Forget(ctx context.Context, batch string, rev uint64) error {
	err := b.kv.Delete(ctx, batch, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !isWrongLastSequence(err) {
		return fmt.Errorf("forgetting batch %s: %w", batch, err)
	}
	return nil
}

// List returns every entry.
func (b *Batches) List(ctx context.Context) ([]BatchControl, error) {
	lister, err := b.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing batches: %w", err)
	}
	var out []BatchControl
	for k := range lister.Keys() {
		c, rev, err := b.Get(ctx, k)
		if err != nil {
			_ = lister.Stop()
			return nil, err
		}
		if rev != 0 { // deleted since it was listed
			out = append(out, c)
		}
	}
	return out, nil
}

// Watch keeps a live view of every entry until ctx ends.
func (b *Batches) Watch(ctx context.Context) (*BatchView, error) {
	w, err := b.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watching batches: %w", err)
	}
	v := &BatchView{m: map[string]entryAt{}, changed: make(chan struct{}, 1)}
	ready := make(chan struct{})
	go func() {
		defer w.Stop()
		for e := range w.Updates() {
			if e == nil { // the initial values are in
				close(ready)
				continue
			}
			v.apply(e)
		}
	}()
	select {
	case <-ready:
		return v, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type entryAt struct {
	c   BatchControl
	rev uint64
}

// BatchView is a live copy of the batches bucket.
type BatchView struct {
	mu      sync.Mutex
	m       map[string]entryAt
	rev     uint64 // the latest revision seen
	changed chan struct{}
}

func (v *BatchView) apply(e jetstream.KeyValueEntry) {
	v.mu.Lock()
	if e.Operation() == jetstream.KeyValuePut {
		v.m[e.Key()] = entryAt{decodeBatchControl(e.Key(), e.Value()), e.Revision()}
	} else {
		delete(v.m, e.Key())
	}
	v.rev = max(v.rev, e.Revision())
	v.mu.Unlock()
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// Get returns batch's entry, the default if it has none.
func (v *BatchView) Get(batch string) BatchControl {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.m[batch]; ok {
		return e.c
	}
	return DefaultBatchControl(batch)
}

// Revision is the latest revision of the bucket the view has applied.
func (v *BatchView) Revision() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rev
}

// Changed receives after an entry changed (coalesced).
func (v *BatchView) Changed() <-chan struct{} { return v.changed }
