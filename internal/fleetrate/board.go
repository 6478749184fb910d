package fleetrate

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/hostlimit"
)

// LimitsBucket is the key-value bucket where workers post their per-host
// limits ("jetpost" → "JETPOST_HOSTLIMITS").
func LimitsBucket(prefix string) string { return queue.NewNames(prefix).HostLimitsBucket() }

// boardTTL is how long a worker's report outlives it: a worker that died
// without withdrawing it disappears from the board after this.
const boardTTL = time.Minute

// MaxBoardHosts bounds one worker's report: the hosts with the most work
// (in flight, then admitted) come first.
const MaxBoardHosts = 100

// WorkerLimits is one worker's report: its hosts' limits at At.
type WorkerLimits struct {
	Worker string                `json:"worker"`
	At     time.Time             `json:"at"`
	Hosts  []hostlimit.HostState `json:"hosts"`
}

// Board shares every worker's per-host limits through a key-value bucket,
// one entry per worker, so one command can show the whole fleet's limits
// without scraping each worker. It is informational: while its bucket is
// missing, posts fail quietly and the bucket is retried in the background.
type Board struct {
	kv         func() (jetstream.KeyValue, error)
	maxPayload func() int64 // the server's, as announced on connect
	peers      atomic.Int64 // workers on the board at the last look
	last       atomic.Pointer[[]WorkerLimits]
}

// BoardConfig is the board bucket's shape; replicas follow the streams'.
func BoardConfig(prefix string) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      LimitsBucket(prefix),
		Description: "jetpost: each worker's concurrency limit and rate limit per host",
		History:     1,
		TTL:         boardTTL,
		Storage:     jetstream.MemoryStorage,
	}
}

// NewBoard returns the board on the bucket of BoardConfig.
func NewBoard(js jetstream.JetStream, aux *queue.AuxBucket) *Board {
	return &Board{kv: aux.KV, maxPayload: js.Conn().MaxPayload}
}

// OpenBoard sets the board's bucket up once and returns the board.
func OpenBoard(ctx context.Context, js jetstream.JetStream, prefix string, replicas int) (*Board, error) {
	aux := queue.NewAuxBucket(js, BoardConfig(prefix), queue.AuxOptions{Replicas: replicas, Log: zerolog.Nop()})
	if err := aux.TryOnce(ctx); err != nil {
		return nil, fmt.Errorf("host limits bucket %s: %w", aux.Name(), err)
	}
	return NewBoard(js, aux), nil
}

// OpenBoardReadOnly binds to the board if it exists, for readers such as
// enqueue status: jetstream.ErrBucketNotFound means no worker posted yet.
func OpenBoardReadOnly(ctx context.Context, js jetstream.JetStream, prefix string) (*Board, error) {
	kv, err := js.KeyValue(ctx, LimitsBucket(prefix))
	if err != nil {
		return nil, err
	}
	return &Board{kv: func() (jetstream.KeyValue, error) { return kv, nil }, maxPayload: js.Conn().MaxPayload}, nil
}

// Post replaces worker's report with hosts: the busiest MaxBoardHosts, and
// fewer if their report would not fit in one message (host names come from
// untrusted files; a report refused for its size would leave the worker off
// the board, and the fleet's peer count short).
func (b *Board) Post(ctx context.Context, worker string, hosts []hostlimit.HostState, at time.Time) error {
	hosts = hostlimit.Busiest(hosts, MaxBoardHosts)
	limit := queue.PayloadLimit(b.maxPayload())
	for {
		data, err := json.Marshal(WorkerLimits{Worker: worker, At: at.UTC(), Hosts: hosts})
		if err != nil {
			return err
		}
		if len(data) > limit && len(hosts) > 0 {
			hosts = hosts[:len(hosts)/2]
			continue
		}
		kv, err := b.kv()
		if err != nil {
			return err
		}
		_, err = kv.Put(ctx, boardKey(worker), data)
		return err
	}
}

// Withdraw removes worker's report.
func (b *Board) Withdraw(ctx context.Context, worker string) error {
	kv, err := b.kv()
	if err != nil {
		return nil // never posted
	}
	err = kv.Delete(ctx, boardKey(worker))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// List returns every live report, by worker.
func (b *Board) List(ctx context.Context) ([]WorkerLimits, error) {
	kv, err := b.kv()
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	var out []WorkerLimits
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return out, err
		}
		var w WorkerLimits
		if err := json.Unmarshal(e.Value(), &w); err != nil {
			continue // another version's format: skip rather than fail the listing
		}
		out = append(out, w)
	}
	slices.SortFunc(out, func(x, y WorkerLimits) int { return strings.Compare(x.Worker, y.Worker) })
	return out, nil
}

// Run posts snapshot() every interval until ctx ends, then withdraws the
// report. Each time it also lists the workers on the board (Peers, Fresh). Failures are passed to onError (if set) and retried at the next
// interval: the board is informational, never a reason to stop a worker.
func (b *Board) Run(ctx context.Context, worker string, snapshot func() []hostlimit.HostState, every time.Duration, onError func(error)) error {
	for round := 0; ; round++ {
		pctx, cancel := context.WithTimeout(ctx, every)
		err := b.Post(pctx, worker, snapshot(), time.Now())
		if err == nil {
			var all []WorkerLimits
			if all, err = b.List(pctx); err == nil {
				b.peers.Store(int64(len(all)))
				b.last.Store(&all)
			}
		}
		cancel()
		if err != nil && ctx.Err() == nil && onError != nil {
			onError(err)
		}
		next := every
		if round < 4 {
			// Workers of a fleet often start together: look again soon,
			// so each knows its peers within a second.
			next = min(every, 250*time.Millisecond)
		}
		t := time.NewTimer(next)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			defer cancel()
			_ = b.Withdraw(wctx, worker)
			return nil
		}
	}
}

// Peers is how many workers (this one included) were on the board at the
// last look: the processes that share the fleet's rate limits. At least 1.
func (b *Board) Peers() int { return int(max(1, b.peers.Load())) }

// Fresh names the workers that had posted within BoardFresh of now at
// Run's last look (at most one interval old): those a rescue's census
// waits for. It asks the server nothing, so it answers while the board's
// bucket has no leader, as after a node's loss; nil before the first look.
func (b *Board) Fresh(now time.Time) []string {
	if all := b.last.Load(); all != nil {
		return FreshWorkers(*all, now)
	}
	return nil
}

func boardKey(worker string) string { return "w." + hex.EncodeToString([]byte(worker)) }
