package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/hostmetrics"
	"github.com/jetpost/jetpost/internal/logging"
	"github.com/jetpost/jetpost/internal/metrics"
	"github.com/jetpost/jetpost/internal/natsconn"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/pkg/hostlimit"
	"github.com/jetpost/jetpost/pkg/queue"
	"github.com/jetpost/jetpost/pkg/sender"
)

const help = `Usage: worker [-h]

worker pulls jetpost jobs from NATS JetStream, sends each HTTP request with a
bounded number in flight through a per-host circuit breaker, retries through
JetStream with backoff, and stores exactly one result per job.

Without JETPOST_NATS_URL it starts an embedded NATS server with JetStream, so
one machine needs nothing else. SIGTERM or SIGINT stop it gracefully.

Environment:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stdout, help)
		_ = config.Usage(stdout, &config.Worker{})
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return &usageError{err}
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Errorf("unexpected arguments %q; configuration is by JETPOST_* variables (see worker -h)", fs.Args())}
	}
	cfg, err := config.LoadWorker()
	if err != nil {
		return &usageError{err}
	}
	retryStatuses, err := sender.ParseStatusSet(cfg.RetryStatuses)
	if err != nil {
		return &usageError{fmt.Errorf("JETPOST_RETRY_STATUSES=%q: %w", cfg.RetryStatuses, err)}
	}
	allowed, err := sender.ParseNetworks(cfg.AllowedNetworks)
	if err != nil {
		return &usageError{fmt.Errorf("JETPOST_ALLOWED_NETWORKS=%q: %w", cfg.AllowedNetworks, err)}
	}
	rateRules, err := hostlimit.ParseRules(cfg.RateLimits)
	if err != nil {
		return &usageError{fmt.Errorf("JETPOST_RATE_LIMITS=%q: %w", cfg.RateLimits, err)}
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return &usageError{err}
	}
	if cfg.WorkerID == "" {
		host, _ := os.Hostname()
		cfg.WorkerID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	log = log.With().Str("worker", cfg.WorkerID).Logger()

	url := cfg.NatsURL
	if url == "" {
		ns, err := natsconn.StartEmbedded(cfg.EmbeddedListen, cfg.DataDir, log)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		url = ns.ClientURL()
	}
	nc, err := natsconn.Connect(url, &cfg.Common, "jetpost-worker "+cfg.WorkerID, true, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	names := queue.NewNames(cfg.SubjectPrefix)
	streams := queue.StreamConfig{
		Replicas:      cfg.Replicas,
		DedupWindow:   cfg.DedupWindow,
		ResultsMaxAge: cfg.ResultsMaxAge,
		AttemptsTTL:   cfg.MaxJobAge + time.Hour,
	}
	// The server may still be starting or electing leaders; keep trying
	// until it answers or we are told to stop.
	var (
		cons       *queue.Consumer
		board      *queue.BreakerBoard
		limits     *hostlimit.Limiter
		limitBoard *fleetrate.Board
	)
	for try := 1; ; try++ {
		// Short tries with jitter: a JetStream request sent before a fresh
		// cluster has a meta leader is never answered, and workers started
		// together must not collide again on every try.
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = queue.Setup(sctx, js, names, streams)
		if err == nil {
			cons, err = queue.NewConsumer(sctx, js, names, queue.ConsumerConfig{
				// A handler for each request in flight and each job
				// waiting for its host's capacity (HostWaiting).
				MaxInflight:     cfg.MaxInflight + cfg.HostWaiting(),
				Prefetch:        cfg.EffectivePrefetch(),
				AckWait:         cfg.AckWait,
				MaxAckPending:   cfg.MaxAckPending,
				ShutdownTimeout: cfg.ShutdownTimeout,
				Worker:          cfg.WorkerID,
				Streams:         streams,

				// Short pulls: jobs parked by host limits come back in
				// bursts; a pull open for a second took a tenth off a
				// rate limit and an adaptive limit (BENCHMARKS.md).
				PullWait: 200 * time.Millisecond,
			}, log)
		}
		// The buckets too: on a cluster they are created in the same
		// election window as the streams.
		if err == nil {
			board, err = queue.OpenBreakerBoard(sctx, js, names, 0)
		}
		if err == nil {
			limits, limitBoard, err = hostLimits(sctx, js, cfg, rateRules)
		}
		cancel()
		if err == nil {
			break
		}
		var ue *usageError
		if errors.As(err, &ue) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("setting up streams: %w", err)
		}
		log.Warn().Err(err).Int("try", try).Msg("setting up streams failed; retrying")
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(try)*250*time.Millisecond, 3*time.Second) + rand.N(500*time.Millisecond)):
		}
	}

	mx := metrics.New(func() uint64 { return nc.Stats().Reconnects })
	breakers := worker.NewBreakerReporter(board, cfg.WorkerID, log)
	mx.Registry().MustRegister(hostmetrics.New(limits.Snapshot))
	redirects := cfg.MaxRedirects
	if redirects == 0 {
		redirects = -1 // the sender reads 0 as "default"; the variable's 0 means none
	}
	snd, err := sender.New(sender.Config{
		Timeout:           cfg.RequestTimeout,
		MaxResponseBytes:  cfg.MaxResponseBytes,
		MaxConnsPerHost:   cfg.MaxInflight,
		MaxRedirects:      redirects,
		MaxRetryAfter:     cfg.MaxRetryAfter,
		RetryStatuses:     retryStatuses,
		IdempotencyHeader: cfg.IdempotencyHeader,
		AllowedNetworks:   allowed,
		Admission:         limits,
		// The bound targets see: jobs waiting for a host hold no place.
		MaxRequests: cfg.MaxInflight,
		Breaker: sender.Breaker{
			Failures:         cfg.BreakerFailures,
			FailureRatio:     cfg.BreakerFailureRatio,
			Window:           cfg.BreakerWindow,
			OpenTimeout:      cfg.BreakerOpenTimeout,
			HalfOpenRequests: cfg.BreakerHalfOpenRequests,
		},
		OnBreakerChange: func(host, from, to string) {
			mx.BreakerChanged(host, from, to)
			breakers.Changed(host, from, to)
			log.Warn().Str("host", host).Str("from", from).Str("to", to).Msg("circuit breaker changed state")
		},
	})
	if err != nil {
		return &usageError{err}
	}
	defer snd.Close()
	mx.WatchQueued(snd.Queued)

	w := worker.New(worker.Config{
		ID:          cfg.WorkerID,
		MaxAttempts: cfg.MaxAttempts,
		Backoff:     sender.Backoff{Base: cfg.BackoffBase, Cap: cfg.BackoffMax},
		MaxJobAge:   cfg.MaxJobAge,
	}, snd, mx.Observer(), log)

	log.Info().Int("max_inflight", cfg.MaxInflight).Int("prefetch", cfg.EffectivePrefetch()).
		Str("nats", nc.ConnectedUrlRedacted()).Str("prefix", cfg.SubjectPrefix).Msg("worker started")
	postLimits := func(ctx context.Context) error {
		return limitBoard.Run(ctx, cfg.WorkerID, limits.Snapshot, 5*time.Second, func(err error) {
			log.Debug().Err(err).Msg("posting host limits failed")
		})
	}
	svc := &worker.Service{
		Consumer:   cons,
		Worker:     w,
		HTTPAddr:   cfg.HTTPAddr,
		Metrics:    mx.Handler(),
		Background: []func(context.Context) error{breakers.Run, postLimits},
		Log:        log,
		Listening: func(addr string) {
			log.Info().Str("addr", addr).Msg("serving /healthz, /readyz and /metrics")
		},
		Ready: func() string {
			if st := nc.Status(); st != nats.CONNECTED {
				return "NATS connection is " + strings.ToLower(st.String())
			}
			return ""
		},
	}
	if err := svc.Run(ctx); err != nil {
		return err
	}
	log.Info().Msg("worker stopped")
	return nil
}

// hostLimits builds the per-host limits: adaptive (or fixed) concurrency,
// and rate limits whose state the fleet shares in a NATS bucket. The board
// shows each worker's limits to enqueue status.
func hostLimits(ctx context.Context, js jetstream.JetStream, cfg *config.Worker, rules hostlimit.Rules) (*hostlimit.Limiter, *fleetrate.Board, error) {
	rates, err := fleetrate.Open(ctx, js, fleetrate.Bucket(cfg.SubjectPrefix), cfg.Replicas)
	if err != nil {
		return nil, nil, err
	}
	board, err := fleetrate.OpenBoard(ctx, js, cfg.SubjectPrefix, cfg.Replicas)
	if err != nil {
		return nil, nil, err
	}
	perHost := cfg.MaxInflight
	if cfg.HostMaxInflight > 0 {
		perHost = min(cfg.HostMaxInflight, cfg.MaxInflight)
	}
	limits, err := hostlimit.New(hostlimit.Config{
		MaxInflight: perHost,
		Fixed:       !cfg.AdaptiveConcurrency,
		Rates:       rules,
		Buckets:     rates,
		Peers:       board.Peers,
		MaxWaiting:  cfg.HostWaiting(),
	})
	if err != nil {
		return nil, nil, &usageError{err}
	}
	return limits, board, nil
}
