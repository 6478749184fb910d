package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultCallTimeout bounds each JetStream call of setup: a request sent
// while a cluster has no meta leader is never answered, and one slow call
// must cost one try, not the process's start.
const DefaultCallTimeout = 10 * time.Second

// JetStream error codes setup tells apart (nats-server's errors.json).
const (
	codeReplicasNotSupported jetstream.ErrorCode = 10074 // replicas > 1 on a server that is not clustered
	codeStreamOffline        jetstream.ErrorCode = 10118
	codeInsufficientRes      jetstream.ErrorCode = 10023 // not enough servers up to place the replicas
	codeNoPeers              jetstream.ErrorCode = 10005
)

// store is one stream or key-value bucket jetpost keeps, as setup sees it.
type store struct {
	kind   string // "stream" or "bucket"
	name   string // the stream's or the bucket's name
	stream string // the JetStream stream that holds it ("KV_<bucket>" for a bucket)
	// apply creates the store (create) or updates it to its shape, with
	// the given number of replicas.
	apply func(ctx context.Context, replicas int, create bool) error
	// is reports whether an existing store already has its shape (the
	// replicas aside): then setup changes nothing, and a process that may
	// only look at the stores (a producer, README "Security") needs no
	// right to change them.
	is func(have jetstream.StreamConfig) bool
	// bind, if set, opens a store left as it is for its user (apply does
	// it otherwise).
	bind func(ctx context.Context) error
}

func (s store) String() string { return s.kind + " " + s.name }

func streamStore(js jetstream.JetStream, sc jetstream.StreamConfig) store {
	is := func(have jetstream.StreamConfig) bool {
		return slices.Equal(have.Subjects, sc.Subjects) && have.Retention == sc.Retention &&
			have.Storage == sc.Storage && have.Duplicates == sc.Duplicates &&
			have.MaxAge == sc.MaxAge && have.Description == sc.Description
	}
	return store{kind: "stream", name: sc.Name, stream: sc.Name, is: is, apply: func(ctx context.Context, r int, create bool) error {
		sc.Replicas = r
		var err error
		if create {
			_, err = js.CreateStream(ctx, sc)
		} else {
			_, err = js.UpdateStream(ctx, sc)
		}
		return err
	}}
}

func bucketStore(js jetstream.JetStream, kc jetstream.KeyValueConfig, bound *jetstream.KeyValue) store {
	is := func(have jetstream.StreamConfig) bool {
		return have.MaxAge == kc.TTL && have.Storage == kc.Storage && have.Description == kc.Description
	}
	var bind func(context.Context) error
	if bound != nil {
		bind = func(ctx context.Context) error {
			kv, err := js.KeyValue(ctx, kc.Bucket)
			if err == nil {
				*bound = kv
			}
			return err
		}
	}
	return store{kind: "bucket", name: kc.Bucket, stream: "KV_" + kc.Bucket, is: is, bind: bind, apply: func(ctx context.Context, r int, create bool) error {
		kc.Replicas = r
		var kv jetstream.KeyValue
		var err error
		if create {
			kv, err = js.CreateKeyValue(ctx, kc)
		} else {
			kv, err = js.UpdateKeyValue(ctx, kc)
		}
		if err == nil && bound != nil {
			*bound = kv
		}
		return err
	}}
}

// ReplicaShortfall is a store left with fewer replicas than
// JETPOST_REPLICAS because raising them failed (too few servers up, or the
// store offline). It works meanwhile; Hint says what to run.
type ReplicaShortfall struct {
	Store, Stream string
	Have, Want    int
	Err           error
	Hint          string
}

func (s *ReplicaShortfall) Error() string {
	return fmt.Sprintf("%s has %d replicas, JETPOST_REPLICAS=%d: raising them failed (%v); %s", s.Store, s.Have, s.Want, s.Err, s.Hint)
}

// ensure creates s with want replicas, or updates it to its shape. It never
// lowers the replicas of an existing store: a process started with the
// default of 1 must not undo the fleet's replication. When raising them
// fails, the store is still usable: the shortfall is returned, not an error.
// Every call is bounded by timeout.
func ensure(ctx context.Context, js jetstream.JetStream, s store, want int, timeout time.Duration) (*ReplicaShortfall, error) {
	want = max(want, 1)
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	call := func(f func(context.Context) error) error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return f(cctx)
	}
	haveCfg, created, err := ensureExists(js, s, want, call)
	if err != nil || created {
		return nil, describe(s, want, err)
	}
	have := max(haveCfg.Replicas, 1)
	if have >= want && s.is(haveCfg) {
		if s.bind == nil {
			return nil, nil
		}
		return nil, describe(s, want, call(s.bind))
	}
	// One update to the shape and max(have, want) replicas: processes
	// starting together, each with a stale view, then all move the store
	// up, never one back down.
	err = call(func(ctx context.Context) error { return s.apply(ctx, max(have, want), false) })
	if err == nil {
		return nil, nil
	}
	if have >= want {
		return nil, describe(s, want, err)
	}
	// Raising failed, or its answer was lost. Another process may have
	// raised it meanwhile: look again rather than apply a stale count.
	curCfg, _, err2 := ensureExists(js, s, want, call)
	if err2 != nil {
		return nil, describe(s, want, err2)
	}
	cur := curCfg.Replicas
	if cur >= want {
		return nil, nil
	}
	// Too few servers up, or the store offline: keep it usable at the
	// replicas it has, and say what to run.
	if err2 := call(func(ctx context.Context) error { return s.apply(ctx, max(cur, 1), false) }); err2 != nil {
		return nil, describe(s, want, err2)
	}
	return &ReplicaShortfall{Store: s.String(), Stream: s.stream, Have: max(cur, 1), Want: want, Err: err, Hint: raiseHint(s, want)}, nil
}

// ensureExists creates s with want replicas if it is missing, or returns
// the configuration it has.
func ensureExists(js jetstream.JetStream, s store, want int, call func(func(context.Context) error) error) (have jetstream.StreamConfig, created bool, err error) {
	for try := 0; ; try++ {
		err = call(func(ctx context.Context) error {
			st, err := js.Stream(ctx, s.stream)
			if err == nil {
				have = st.CachedInfo().Config
			}
			return err
		})
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return have, false, err
		}
		err = call(func(ctx context.Context) error { return s.apply(ctx, want, true) })
		// Name in use: another process created it meanwhile with another
		// shape (an older version's); read it again and bring it to ours.
		if !isNameInUse(err) || try > 0 {
			return jetstream.StreamConfig{}, err == nil, err
		}
	}
}

func isNameInUse(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || errors.Is(err, jetstream.ErrBucketExists)
}

func apiCode(err error) jetstream.ErrorCode {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.ErrorCode
	}
	return 0
}

// describe names the store and says what the error means for it.
func describe(s store, want int, err error) error {
	if err == nil {
		return nil
	}
	var why string
	switch code := apiCode(err); {
	case code == codeReplicasNotSupported:
		return &SetupConfigError{fmt.Errorf("%s: %w (JETPOST_REPLICAS=%d needs a JetStream cluster of at least %d servers; set JETPOST_REPLICAS=1 for a single server)", s, err, want, want)}
	case code == codeStreamOffline:
		why = "its replicas are on servers that are down or not caught up; start them again"
		if s.kind == "bucket" {
			why += fmt.Sprintf(", or, if they are gone for good, delete it (nats stream rm %s) for jetpost to create it anew", s.stream)
		}
	case code == codeInsufficientRes || code == codeNoPeers:
		why = fmt.Sprintf("fewer than the %d servers JETPOST_REPLICAS asks for are up with JetStream", want)
	case errors.Is(err, context.DeadlineExceeded):
		why = "no answer in time: the cluster may be electing a leader, or too few of its servers are up"
	default:
		return fmt.Errorf("%s: %w", s, err)
	}
	return fmt.Errorf("%s: %w (%s)", s, err, why)
}

// raiseHint is the command that raises a store's replicas by hand.
func raiseHint(s store, want int) string {
	return fmt.Sprintf("jetpost raises them at its next start, or run `nats stream edit %s --replicas %d` once enough servers are up", s.stream, want)
}

// SetupConfigError is a setup failure that trying again cannot cure: the
// configuration does not fit the servers.
type SetupConfigError struct{ Err error }

func (e *SetupConfigError) Error() string { return e.Err.Error() }
func (e *SetupConfigError) Unwrap() error { return e.Err }

// IsSetupFinal reports whether a setup error cannot be cured by trying again.
func IsSetupFinal(err error) bool {
	var ce *SetupConfigError
	return errors.As(err, &ce)
}
