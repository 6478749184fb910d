package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/jetpost/jetpost/internal/queue"
)

// Consumer is the part of the queue a worker process runs.
type Consumer interface {
	Run(ctx context.Context, h queue.Handler) error
	Consuming() bool
}

// Service runs a worker process's long-lived parts: consumption and the
// operations endpoint. The first to fail stops the others.
type Service struct {
	Consumer Consumer
	Worker   *Worker
	// HTTPAddr serves /healthz, /readyz and Metrics; empty disables.
	HTTPAddr string
	// Ready reports why the process is not ready ("" when it is), beyond
	// consuming; e.g. the NATS connection state.
	Ready   func() string
	Metrics http.Handler
	// Console, if set, is served at / (internal/console); its Close, if
	// it has one, runs once the HTTP server has shut down.
	Console http.Handler
	Log     zerolog.Logger
	// Listening, if set, is told the operations endpoint's address.
	Listening func(addr string)
	// Background parts (e.g. the breaker reporter) run until consumption
	// has ended, so they still see what the final jobs did.
	Background []func(ctx context.Context) error
}

// Run blocks until ctx is cancelled and every delivery is settled.
func (s *Service) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	consumeDone := make(chan struct{})
	g.Go(func() error {
		defer close(consumeDone)
		s.Log.Info().Msg("consuming jobs")
		if err := s.Consumer.Run(gctx, s.Worker.Handle); err != nil {
			return fmt.Errorf("consuming: %w", err)
		}
		s.Log.Info().Msg("stopped consuming; every job in hand is settled")
		return nil
	})
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()
	for _, run := range s.Background {
		g.Go(func() error { return run(bgCtx) })
	}
	g.Go(func() error {
		<-consumeDone
		stopBg()
		return nil
	})
	if s.HTTPAddr != "" {
		ln, err := net.Listen("tcp", s.HTTPAddr)
		if err != nil {
			return fmt.Errorf("JETPOST_HTTP_ADDR=%s: %w", s.HTTPAddr, err)
		}
		if s.Listening != nil {
			s.Listening(ln.Addr().String())
		}
		srv := &http.Server{Handler: s.mux(), ReadHeaderTimeout: 5 * time.Second}
		// Shutdown does not end requests; the console's event streams end
		// with their context.
		base, endStreams := context.WithCancel(context.WithoutCancel(ctx))
		srv.BaseContext = func(net.Listener) context.Context { return base }
		srv.RegisterOnShutdown(endStreams)
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("operations endpoint: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			// Stay observable while draining; close once consumption ended.
			<-consumeDone
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				return err
			}
			// Every viewer has left: the console's reads end before the
			// caller closes the NATS connection under them.
			if c, ok := s.Console.(interface{ Close() }); ok {
				c.Close()
			}
			return nil
		})
	}
	return g.Wait()
}

func (s *Service) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		reason := ""
		if s.Ready != nil {
			reason = s.Ready()
		}
		if reason == "" && !s.Consumer.Consuming() {
			reason = "not consuming jobs"
		}
		if reason != "" {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.Metrics)
	}
	if s.Console != nil {
		mux.Handle("/", s.Console)
	}
	return mux
}
