package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/logging"
	"github.com/jetpost/jetpost/internal/natsconn"
	"github.com/jetpost/jetpost/internal/tracing"
	"github.com/jetpost/jetpost/internal/version"
	"github.com/jetpost/jetpost/internal/worker/daemon"
)

const help = `Usage: worker [-h] [--version]

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
	showVersion := fs.Bool("version", false, "print the version and exit")
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
	if *showVersion {
		fmt.Fprintln(stdout, version.Of("worker", buildVersion))
		return nil
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Errorf("unexpected arguments %q; configuration is by JETPOST_* variables (see worker -h)", fs.Args())}
	}
	cfg, err := config.LoadWorker()
	if err != nil {
		return &usageError{err}
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return &usageError{err}
	}
	id := cfg.ID()
	log = log.With().Str("worker", id).Logger()
	config.WarnUnknown(func(msg string) { log.Warn().Msg(msg) })

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
	nc, err := natsconn.Connect(url, &cfg.Common, "jetpost-worker "+id, true, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	tracer, stopTracing, err := tracing.Start(ctx, "jetpost-worker", buildVersion, stderr, func(err error) {
		log.Warn().Err(err).Msg("exporting traces failed")
	})
	if err != nil {
		return &usageError{err}
	}
	defer stopTracing() // after the last delivery's spans end
	opts := daemon.Options{Log: log, Tracer: tracer}
	if cc, ok := cfg.ConsoleConnection(); ok && cfg.HTTPAddr != "" {
		if opts.ConsoleConn, err = natsconn.Connect(url, &cc, "jetpost-console "+id, true, log); err != nil {
			return fmt.Errorf("console: %w", err)
		}
		defer opts.ConsoleConn.Close()
	}
	svc, err := daemon.Build(ctx, cfg, nc, opts)
	if err != nil {
		return err
	}
	if err := svc.Run(ctx); err != nil {
		return err
	}
	log.Info().Msg("worker stopped")
	return nil
}
