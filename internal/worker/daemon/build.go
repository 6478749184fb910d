// Package daemon is the worker process's composition root: from a validated
// configuration and a NATS connection, Build makes the streams, the
// consumer, the buckets, the host limits, the sender and the metrics, and
// joins them into a worker.Service. cmd/worker and the benchmarks run the
// worker it builds, so what is measured is what ships. It lives apart from
// internal/worker so that the policy there knows nothing of Prometheus or
// NATS buckets.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/hostmetrics"
	"github.com/jetpost/jetpost/internal/metrics"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/tracing"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/pkg/hostlimit"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/retry"
	"github.com/jetpost/jetpost/pkg/sender"
)

// Options are what Build takes besides the configuration and connection.
type Options struct {
	Log zerolog.Logger
	// WrapJetStream and WrapSender, if set, wrap the handle every queue
	// operation goes through and the sender every attempt goes through: the
	// profiling benchmark times them on the production wiring.
	WrapJetStream func(jetstream.JetStream) jetstream.JetStream
	WrapSender    func(worker.Sender) worker.Sender
	// SetupPause and AuxPause, if set, replace the pauses between tries
	// of setting up the streams and the auxiliary buckets (tests).
	SetupPause, AuxPause func(n int) time.Duration
	// Tracer, if set, traces deliveries, requests and callbacks.
	Tracer *tracing.Tracer
	// Metrics, if set, is given the worker's metrics once they are all
	// registered (the dashboards' test reads their names).
	Metrics func(*metrics.Metrics)
	// ConsoleConn, if set, is the console's own connection (a NATS user
	// with the rights its actions need); otherwise it uses the worker's.
	ConsoleConn *nats.Conn
}

// Build sets up the streams, the consumer and the buckets, retrying while
// the server does not answer until ctx ends, and wires a worker around
// them. The auxiliary buckets (breaker board, limits board, rate state) are
// not waited for: the worker degrades those features and its Service keeps
// trying them. cfg must have passed validation (config.LoadWorker). Run the
// returned Service to consume; it stops when its context is cancelled.
func Build(ctx context.Context, cfg *config.Worker, nc *nats.Conn, o Options) (*worker.Service, error) {
	var js jetstream.JetStream
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if o.WrapJetStream != nil {
		js = o.WrapJetStream(js)
	}
	st, err := openStores(ctx, js, cfg, o)
	if err != nil {
		return nil, err
	}
	limits, err := hostLimits(cfg, st)
	if err != nil {
		return nil, err
	}
	id, log := cfg.ID(), o.Log
	mx := metrics.New(func() uint64 { return nc.Stats().Reconnects })
	mx.Register(hostmetrics.New(limits.Snapshot))
	breakers := worker.NewBreakerReporter(st.breakers, id, log)
	snd, err := newSender(cfg, limits, o.Tracer, func(host string, from, to job.BreakerState) {
		mx.BreakerChanged(host, from, to)
		breakers.Changed(host, from, to)
		log.Warn().Str("host", host).Stringer("from", from).Stringer("to", to).Msg("circuit breaker changed state")
	})
	if err != nil {
		return nil, err
	}
	mx.WatchQueued(snd.Queued)
	mx.WatchBatches(st.consumer.Lanes)
	mx.WatchReadiness(metrics.Readiness{Lanes: st.consumer.Readiness, Queued: snd.Queued, Sending: snd.Sending})
	ready := func() string {
		if st := nc.Status(); st != nats.CONNECTED {
			return "NATS connection is " + strings.ToLower(st.String())
		}
		return ""
	}
	mx.WatchHealth(func() bool { return ready() == "" && st.consumer.Consuming() }, st.consumer.ResultStoreFailures, st.consumer.SettleFailures)
	if o.Metrics != nil {
		o.Metrics(mx)
	}
	var s worker.Sender = snd
	if o.WrapSender != nil {
		s = o.WrapSender(snd)
	}
	w := worker.New(worker.Config{
		ID:          id,
		MaxAttempts: cfg.MaxAttempts,
		Backoff:     sender.Backoff{Base: cfg.BackoffBase, Cap: cfg.BackoffMax},
		MaxJobAge:   cfg.MaxJobAge,
		Tracer:      o.Tracer,
	}, s, mx.Observer(), log)

	postLimits := func(ctx context.Context) error {
		return st.limits.Run(ctx, id, limits.Snapshot, 5*time.Second, func(err error) {
			log.Debug().Err(err).Msg("posting host limits failed")
		})
	}
	// Idle connections go once consumption has ended: nothing sends then.
	closeSender := func(ctx context.Context) error {
		<-ctx.Done()
		snd.Close()
		return nil
	}
	con, err := newConsole(cfg, nc, st.names, o)
	if err != nil {
		return nil, err
	}
	log.Info().Int("max_inflight", cfg.MaxInflight).Int("prefetch", cfg.EffectivePrefetch()).
		Str("nats", nc.ConnectedUrlRedacted()).Str("prefix", cfg.SubjectPrefix).Msg("worker started")
	return &worker.Service{
		Consumer:   st.consumer,
		Worker:     w,
		HTTPAddr:   cfg.HTTPAddr,
		Metrics:    mx.Handler(),
		Console:    con,
		Background: append([]func(context.Context) error{breakers.Run, postLimits, closeSender}, st.auxRuns()...),
		Log:        log,
		Listening: func(addr string) {
			log.Info().Str("addr", addr).Bool("console_actions", cfg.ConsoleToken != "").Msg("serving /healthz, /readyz and /metrics, and the console at /")
		},
		Ready: ready,
	}, nil
}

// stores are the worker's JetStream parts: the consumer and the buckets of
// breaker states, fleet-wide rate buckets and posted host limits. Only the
// consumer's are essential; the others are auxiliary (queue.AuxBucket).
type stores struct {
	names    queue.Names
	consumer *queue.Consumer
	breakers *queue.BreakerBoard
	rates    *fleetrate.Store
	limits   *fleetrate.Board
	aux      []*queue.AuxBucket // retried in the background until set up
}

// openStores sets up what a job needs, trying until the server answers or
// ctx ends (it may still be starting or electing leaders), then tries the
// auxiliary buckets once: a worker starts without them.
func openStores(ctx context.Context, js jetstream.JetStream, cfg *config.Worker, o Options) (*stores, error) {
	names := queue.NewNames(cfg.SubjectPrefix)
	names.SecretHeaders = cfg.SecretHeaders() // job identity leaves them out, as enqueue does
	names.IdentityKey = []byte(cfg.IdentityKey)
	streams := queue.StreamConfig{
		Replicas:      cfg.Replicas,
		DedupWindow:   cfg.DedupWindow,
		ResultsMaxAge: cfg.ResultsMaxAge,
		AttemptsTTL:   cfg.MaxJobAge + time.Hour,
	}
	setup := queue.SetupOptions{Attempts: true, Log: o.Log, Pause: o.SetupPause}
	if err := queue.EnsureStores(ctx, js, names, streams, setup); err != nil {
		return nil, fmt.Errorf("setting up streams: %w", err)
	}
	policy, err := cfg.Policy()
	if err != nil {
		return nil, err
	}
	st := stores{names: names}
	err = retry.Do(ctx, retry.Policy{
		PerTry: 2 * queue.DefaultCallTimeout,
		Pause: func(n int) time.Duration {
			return retry.Linear(n, 250*time.Millisecond, 3*time.Second) + rand.N(500*time.Millisecond)
		},
		OnRetry: func(err error, n int) {
			o.Log.Warn().Err(err).Int("try", n).Msg("setting up streams failed; retrying")
		},
	}, func(ctx context.Context) error {
		var err error
		// A rescue's census waits for every worker on the limits board,
		// as the board last listed them (st.limits is set below, before
		// any rescue).
		expected := func(context.Context) []string { return st.limits.Fresh(time.Now()) }
		st.consumer, err = newConsumer(ctx, js, names, cfg, streams, policy, expected, o.Log)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("setting up streams: the consumer side of %s: %w", names.JobsStream(), err)
	}
	auxOpts := func(feature string) queue.AuxOptions {
		return queue.AuxOptions{Replicas: cfg.Replicas, Pause: o.AuxPause, Feature: feature, Log: o.Log}
	}
	breakers := queue.NewAuxBucket(js, queue.BreakerBucketConfig(names, 0),
		auxOpts("breaker states are not shared: enqueue status and progress do not show them"))
	rates := queue.NewAuxBucket(js, fleetrate.BucketConfig(fleetrate.Bucket(cfg.SubjectPrefix)),
		auxOpts("shared rate limits: nothing is sent to rate-limited hosts until it is back"))
	limits := queue.NewAuxBucket(js, fleetrate.BoardConfig(cfg.SubjectPrefix),
		auxOpts("host limits are not posted: enqueue status does not show them"))
	st.aux = []*queue.AuxBucket{breakers, rates, limits}
	st.breakers, st.rates, st.limits = queue.NewBreakerBoard(breakers), fleetrate.NewStore(rates), fleetrate.NewBoard(js, limits)
	// One bounded try each, at once: on a healthy cluster they are ready
	// when the first job comes; otherwise Run keeps trying.
	var wg sync.WaitGroup
	for _, a := range st.aux {
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.TryOnce(ctx) }()
	}
	wg.Wait()
	return &st, nil
}

func newConsumer(ctx context.Context, js jetstream.JetStream, names queue.Names, cfg *config.Worker, streams queue.StreamConfig, policy job.Policy, expected func(context.Context) []string, log zerolog.Logger) (*queue.Consumer, error) {
	return queue.NewConsumer(ctx, js, names, queue.ConsumerConfig{
		// A handler for each request in flight and each job waiting for
		// its host's capacity (HostWaiting).
		MaxInflight:     cfg.MaxInflight + cfg.HostWaiting(),
		Prefetch:        cfg.EffectivePrefetch(),
		AckWait:         cfg.AckWait,
		MaxAckPending:   cfg.MaxAckPending,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Worker:          cfg.ID(),
		Streams:         streams,
		Policy:          policy,
		// Short pulls: jobs parked by host limits come back in bursts; a
		// pull open for a second took a tenth off a rate limit and an
		// adaptive limit (BENCHMARKS.md).
		PullWait: 200 * time.Millisecond,
		Rescue:   queue.RescueConfig{Expected: expected},
	}, log)
}

// auxRuns keeps trying the auxiliary buckets not set up yet.
func (st *stores) auxRuns() []func(context.Context) error {
	out := make([]func(context.Context) error, len(st.aux))
	for i, a := range st.aux {
		out[i] = a.Run
	}
	return out
}

// hostLimits builds the per-host limits: adaptive (or fixed) concurrency,
// and rate limits whose state the fleet shares in a NATS bucket.
func hostLimits(cfg *config.Worker, st *stores) (*hostlimit.Limiter, error) {
	rules, err := cfg.RateRules()
	if err != nil {
		return nil, err
	}
	return hostlimit.New(hostlimit.Config{
		MaxInflight: cfg.HostInflight(),
		Fixed:       !cfg.AdaptiveConcurrency,
		Rates:       rules,
		Buckets:     st.rates,
		Peers:       st.limits.Peers,
		// The handlers beyond JETPOST_MAX_INFLIGHT may wait for a slot
		// or a token, so other hosts' jobs always find one; a fast host's
		// waiters (served within 100 ms) may take the others too: parked
		// instead, each would cost a delayed NAK and a redelivery.
		MaxWaiting:  cfg.HostWaiting(),
		FastWaiting: cfg.MaxInflight,
	})
}

func newSender(cfg *config.Worker, limits *hostlimit.Limiter, tracer *tracing.Tracer, onBreaker func(host string, from, to job.BreakerState)) (*sender.Sender, error) {
	retry, err1 := cfg.RetryStatusSet()
	allowed, err2 := cfg.AllowedPrefixes()
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	var wrap func(http.RoundTripper) http.RoundTripper
	if tracer != nil {
		wrap = tracer.Transport
	}
	return sender.New(sender.Config{
		WrapTransport:     wrap,
		Timeout:           cfg.RequestTimeout,
		MaxResponseBytes:  cfg.MaxResponseBytes,
		MaxConnsPerHost:   cfg.MaxInflight,
		MaxRedirects:      cfg.SenderRedirects(),
		MaxRetryAfter:     cfg.MaxRetryAfter,
		RetryStatuses:     retry,
		IdempotencyHeader: cfg.IdempotencyHeader,
		AllowedNetworks:   allowed,
		Admission:         limits,
		// The bound targets see: jobs waiting for a host hold no place.
		MaxRequests: cfg.MaxInflight,
		// Dropped on redirects that leave a job's origin.
		SecretHeaders:          cfg.SecretHeaders(),
		MaxResponseHeaderBytes: cfg.MaxResponseHeaderBytes,
		Breaker: sender.Breaker{
			Failures:         cfg.BreakerFailures,
			FailureRatio:     cfg.BreakerFailureRatio,
			Window:           cfg.BreakerWindow,
			OpenTimeout:      cfg.BreakerOpenTimeout,
			HalfOpenRequests: cfg.BreakerHalfOpenRequests,
		},
		OnBreakerChange: onBreaker,
	})
}
