package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StoreReplication is where one stream or bucket stands in a cluster.
type StoreReplication struct {
	StoreName
	Missing  bool   `json:"missing,omitempty"` // not created yet
	Replicas int    `json:"replicas"`          // configured on the stream
	Want     int    `json:"want"`              // JETPOST_REPLICAS
	Leader   string `json:"leader,omitempty"`
	// Peers are the replicas other than the leader, as the leader sees them.
	Peers []PeerState `json:"peers,omitempty"`
	Error string      `json:"error,omitempty"` // its state could not be read (offline, no answer)
}

// PeerState is one follower replica.
type PeerState struct {
	Name    string        `json:"name"`
	Current bool          `json:"current"`
	Offline bool          `json:"offline,omitempty"`
	Lag     uint64        `json:"lag,omitempty"`    // operations behind the leader
	Active  time.Duration `json:"active,omitempty"` // since last heard of
}

// Problems says what is wrong with the store's replication: nothing for a
// healthy one.
func (r StoreReplication) Problems() []string {
	var out []string
	switch {
	case r.Missing:
		return nil // created by the next worker or enqueue
	case r.Error != "":
		return []string{fmt.Sprintf("%s %s: %s", r.Kind, r.Name, r.Error)}
	}
	if r.Replicas < r.Want {
		out = append(out, fmt.Sprintf("%s %s has %d replicas, JETPOST_REPLICAS=%d: a worker raises them at its next start, or run `nats stream edit %s --replicas %d`",
			r.Kind, r.Name, r.Replicas, r.Want, r.Stream, r.Want))
	}
	if r.Leader == "" && r.Replicas > 1 {
		out = append(out, fmt.Sprintf("%s %s has no leader", r.Kind, r.Name))
	}
	for _, p := range r.Peers {
		switch {
		case p.Offline:
			out = append(out, fmt.Sprintf("%s %s: replica on %s is offline", r.Kind, r.Name, p.Name))
		case !p.Current:
			out = append(out, fmt.Sprintf("%s %s: replica on %s is lagging (%d operations behind)", r.Kind, r.Name, p.Name, p.Lag))
		}
	}
	return out
}

// Replication reads the replication of every stream and bucket (Names.Stores),
// each bounded by timeout and all at once: a store offline must not hold up
// the others. want is JETPOST_REPLICAS.
func Replication(ctx context.Context, js jetstream.JetStream, n Names, want int, timeout time.Duration) []StoreReplication {
	stores := n.Stores()
	out := make([]StoreReplication, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			out[i] = replicationOf(cctx, js, s, max(want, 1))
		}()
	}
	wg.Wait()
	return out
}

func replicationOf(ctx context.Context, js jetstream.JetStream, s StoreName, want int) StoreReplication {
	r := StoreReplication{StoreName: s, Want: want}
	st, err := js.Stream(ctx, s.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		r.Missing = true
		return r
	case err != nil:
		r.Error = err.Error()
		return r
	}
	info := st.CachedInfo()
	r.Replicas = max(info.Config.Replicas, 1)
	if c := info.Cluster; c != nil {
		r.Leader = c.Leader
		for _, p := range c.Replicas {
			r.Peers = append(r.Peers, PeerState{Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag, Active: p.Active})
		}
	}
	return r
}
