package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/pkg/retry"
)

// ErrAuxUnavailable is what an auxiliary bucket's users get while it is not
// set up: the feature it serves is degraded, jobs are not.
var ErrAuxUnavailable = errors.New("bucket not available yet")

// AuxOptions say how an auxiliary bucket is set up and retried.
type AuxOptions struct {
	Replicas int // JETPOST_REPLICAS
	// CallTimeout bounds each JetStream call (DefaultCallTimeout if 0).
	CallTimeout time.Duration
	// Pause is the wait after failed try n (from 1); nil: auxPause.
	Pause func(n int) time.Duration
	// Feature says what is degraded while the bucket is missing, for the
	// warning ("breaker states are not shared").
	Feature string
	Log     zerolog.Logger
}

// auxPause backs off to a try every 30 s: the bucket is not worth more of
// a struggling cluster's attention.
func auxPause(n int) time.Duration {
	return retry.Linear(n, time.Second, 30*time.Second)
}

// AuxBucket is a key-value bucket a worker can do without: breaker states,
// posted host limits, rate-limit state. A worker starts and consumes while
// it cannot be set up (a node down, an offline stream, a permission
// missing); Run keeps trying in the background, with one warning when the
// feature is lost and a note when it is back.
type AuxBucket struct {
	js  jetstream.JetStream
	cfg jetstream.KeyValueConfig
	o   AuxOptions

	mu      sync.Mutex
	kv      jetstream.KeyValue
	lastErr error
	warned  bool
	onBind  []func(context.Context, jetstream.KeyValue)
	bound   chan struct{}
}

// NewAuxBucket returns the bucket of cfg, not yet set up (TryOnce, Run).
func NewAuxBucket(js jetstream.JetStream, cfg jetstream.KeyValueConfig, o AuxOptions) *AuxBucket {
	if o.Pause == nil {
		o.Pause = auxPause
	}
	return &AuxBucket{js: js, cfg: cfg, o: o, bound: make(chan struct{}), lastErr: ErrAuxUnavailable}
}

// Name is the bucket's name.
func (a *AuxBucket) Name() string { return a.cfg.Bucket }

// KV returns the bucket, or an error wrapping ErrAuxUnavailable (and why)
// while it is not set up.
func (a *AuxBucket) KV() (jetstream.KeyValue, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.kv == nil {
		if errors.Is(a.lastErr, ErrAuxUnavailable) {
			return nil, fmt.Errorf("bucket %s: %w", a.cfg.Bucket, a.lastErr)
		}
		return nil, fmt.Errorf("bucket %s: %w: %w", a.cfg.Bucket, ErrAuxUnavailable, a.lastErr)
	}
	return a.kv, nil
}

// Bound is closed once the bucket is set up.
func (a *AuxBucket) Bound() <-chan struct{} { return a.bound }

// OnBind registers f to run once the bucket is set up (at once if it is),
// e.g. to write what was kept while it was missing. Register before Run.
func (a *AuxBucket) OnBind(f func(context.Context, jetstream.KeyValue)) {
	a.mu.Lock()
	kv := a.kv
	if kv == nil {
		a.onBind = append(a.onBind, f)
	}
	a.mu.Unlock()
	if kv != nil {
		f(context.Background(), kv)
	}
}

// TryOnce sets the bucket up if it is not, in one bounded try.
func (a *AuxBucket) TryOnce(ctx context.Context) error {
	a.mu.Lock()
	ok := a.kv != nil
	a.mu.Unlock()
	if ok {
		return nil
	}
	var kv jetstream.KeyValue
	short, err := ensure(ctx, a.js, bucketStore(a.js, a.cfg, &kv), a.o.Replicas, a.o.CallTimeout)
	if err != nil {
		a.failed(err)
		return err
	}
	if short != nil {
		a.o.Log.Warn().Str("store", short.Store).Int("replicas", short.Have).Int("want", short.Want).
			Err(short.Err).Msg(short.Error())
	}
	a.bind(ctx, kv)
	return nil
}

// Run tries until the bucket is set up or ctx ends. It returns nil either
// way: a missing auxiliary bucket never stops a worker.
func (a *AuxBucket) Run(ctx context.Context) error {
	_ = retry.Do(ctx, retry.Policy{
		PerTry: 3 * max(a.o.CallTimeout, DefaultCallTimeout),
		Pause:  a.o.Pause,
	}, a.TryOnce)
	return nil
}

// failed records why the bucket is missing, and warns the first time.
func (a *AuxBucket) failed(err error) {
	a.mu.Lock()
	a.lastErr = err
	first := !a.warned
	a.warned = true
	a.mu.Unlock()
	ev := a.o.Log.Debug()
	if first {
		ev = a.o.Log.Warn()
	}
	ev.Err(err).Str("bucket", a.cfg.Bucket).Str("degraded", a.o.Feature).
		Msg("auxiliary bucket unavailable; jobs go on without it, and it is tried again in the background")
}

func (a *AuxBucket) bind(ctx context.Context, kv jetstream.KeyValue) {
	a.mu.Lock()
	if a.kv != nil {
		a.mu.Unlock()
		return
	}
	a.kv, a.lastErr = kv, nil
	hooks, recovered := a.onBind, a.warned
	a.onBind = nil
	close(a.bound)
	a.mu.Unlock()
	if recovered {
		a.o.Log.Info().Str("bucket", a.cfg.Bucket).Str("restored", a.o.Feature).Msg("auxiliary bucket available again")
	}
	for _, f := range hooks {
		f(ctx, kv)
	}
}
