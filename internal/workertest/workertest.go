// Package workertest runs real workers inside a test process: each with its
// own NATS connection, consumer and sender, as separate processes would,
// against a real server. Tests of every package that needs results flowing
// (worker, enqueue) share it.
package workertest

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/pkg/hostlimit"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

// Options are the knobs a test turns; zero values are fast defaults.
type Options struct {
	Workers     int           // default 1
	MaxInflight int           // default 8
	Prefetch    int           // default 4
	AckWait     time.Duration // default 5s
	MaxAttempts int           // default 5
	Breaker     sender.Breaker
	OnBreaker   func(host string, from, to job.BreakerState)
	Observer    worker.Observer
	// RefuseLoopback leaves 127.0.0.0/8 out of the allowed networks, as a
	// worker without JETPOST_ALLOWED_NETWORKS: jobs to it are refused.
	RefuseLoopback bool
	Names          queue.Names        // default prefix "jetpost"
	Streams        queue.StreamConfig // default: R1, 1m dedup, 1h results
	// Policy is what jobs may ask (reply_to, timeout); default: no
	// reply_to, a 5m timeout ceiling.
	Policy job.Policy
	// MaxJobAge expires jobs enqueued longer ago; default 1h.
	MaxJobAge time.Duration

	// Backoff between tries; default 5ms doubling to 20ms.
	Backoff sender.Backoff

	// RateLimits, if set, puts every request, jobs' and callbacks', under
	// per-host limits as cmd/worker does: these rates (JETPOST_RATE_LIMITS
	// syntax), shared by the workers through the server's bucket.
	RateLimits string
}

// Start runs the workers until the test ends or stop is called.
func Start(t testing.TB, url string, o Options) (stop func()) {
	t.Helper()
	o.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range o.Workers {
		id := fmt.Sprintf("w%d", i+1)
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		svc, snd, err := build(ctx, nc, id, &o)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer nc.Close()
			defer snd.Close()
			if err := svc.Run(ctx); err != nil {
				t.Errorf("worker %s: %v", id, err)
			}
		}()
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func (o *Options) setDefaults() {
	if o.Workers == 0 {
		o.Workers = 1
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = 8
	}
	if o.Prefetch == 0 {
		o.Prefetch = 4
	}
	if o.AckWait == 0 {
		o.AckWait = 5 * time.Second
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 5
	}
	if o.Backoff.Base == 0 {
		o.Backoff = sender.Backoff{Base: 5 * time.Millisecond, Cap: 20 * time.Millisecond}
	}
	if o.Breaker.Failures == 0 {
		o.Breaker = sender.Breaker{Failures: 1000, OpenTimeout: time.Second, HalfOpenRequests: 1}
	}
	if o.Names.Prefix == "" {
		o.Names = Names()
	}
	if o.Streams.DedupWindow == 0 {
		o.Streams = Streams()
	}
}

// build wires worker id on nc: streams, consumer, sender and worker. The
// caller closes the sender when the service has stopped.
func build(ctx context.Context, nc *nats.Conn, id string, o *Options) (*worker.Service, *sender.Sender, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	if err := queue.Setup(ctx, js, o.Names, o.Streams); err != nil {
		return nil, nil, err
	}
	adm, waiting, err := limits(ctx, js, o)
	if err != nil {
		return nil, nil, err
	}
	cons, err := queue.NewConsumer(ctx, js, o.Names, queue.ConsumerConfig{
		MaxInflight: o.MaxInflight + waiting, Prefetch: o.Prefetch, AckWait: o.AckWait,
		ShutdownTimeout: 10 * time.Second, Worker: id, Streams: o.Streams, PullWait: 200 * time.Millisecond,
		Policy: o.Policy,
	}, zerolog.Nop())
	if err != nil {
		return nil, nil, err
	}
	allowed := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	if o.RefuseLoopback {
		allowed = nil
	}
	cfg := sender.Config{
		Timeout: 10 * time.Second, MaxConnsPerHost: o.MaxInflight, IdempotencyHeader: "Idempotency-Key",
		AllowedNetworks: allowed,
		Breaker:         o.Breaker, OnBreakerChange: o.OnBreaker,
	}
	if adm != nil {
		// The bound targets see: jobs waiting for a host hold no place.
		cfg.Admission, cfg.MaxRequests = adm, o.MaxInflight
	}
	snd, err := sender.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	w := worker.New(worker.Config{
		ID: id, MaxAttempts: o.MaxAttempts,
		Backoff: o.Backoff, MaxJobAge: cmp.Or(o.MaxJobAge, time.Hour),
	}, snd, o.Observer, zerolog.Nop())
	return &worker.Service{Consumer: cons, Worker: w, Log: zerolog.Nop()}, snd, nil
}

// limits builds the host limits of o.RateLimits, or none, and says how
// many handlers to add for jobs waiting in them, as cmd/worker does.
func limits(ctx context.Context, js jetstream.JetStream, o *Options) (sender.Admission, int, error) {
	if o.RateLimits == "" {
		return nil, 0, nil
	}
	rules, err := hostlimit.ParseRules(o.RateLimits)
	if err != nil {
		return nil, 0, err
	}
	store, err := fleetrate.Open(ctx, js, fleetrate.Bucket(o.Names.Prefix), 1)
	if err != nil {
		return nil, 0, err
	}
	workers := o.Workers
	lim, err := hostlimit.New(hostlimit.Config{MaxInflight: o.MaxInflight, Rates: rules, Buckets: store,
		MaxWaiting: o.MaxInflight, Peers: func() int { return workers }})
	if err != nil {
		return nil, 0, err
	}
	return lim, o.MaxInflight, nil
}

// Names is the subject and stream layout tests use unless they need
// another: the default "jetpost" prefix.
func Names() queue.Names { return queue.NewNames("jetpost") }

// Streams is the stream shape tests use unless they need another: one
// replica and short retention, so a test's streams cost little.
func Streams() queue.StreamConfig {
	return queue.StreamConfig{Replicas: 1, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}
}
