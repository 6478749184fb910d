// Command demotarget serves internal/target on a local address: the HTTP API
// that `make demo`, integration tests run against a real process and
// benchmarks send jobs to. See internal/target for the query-string knobs.
//
// Usage:
//
//	demotarget [-addr 127.0.0.1:8088] [-latency 0] [-jitter 0] [-fail-rate 0]
//	           [-fail-status 503] [-seed 1] [-key-header Idempotency-Key] [-log]
//
// Once listening it prints "demotarget listening on http://ADDR" (the real
// port when -addr ends in :0), which scripts wait for. On SIGINT or SIGTERM
// it shuts down gracefully and prints its final stats as one JSON line.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jetpost/jetpost/internal/target"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, &ue):
		// The flag package has already printed the problem and the usage.
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "demotarget: %v\n", err)
		os.Exit(1)
	}
}

// usageError marks a command-line mistake that has already been reported.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

type config struct {
	addr            string
	opts            target.Options
	logRequests     bool
	shutdownTimeout time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("demotarget", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8088", "listen address (port 0 picks a free port)")
	fs.DurationVar(&c.opts.Latency, "latency", 0, "delay added to every request")
	fs.DurationVar(&c.opts.Jitter, "jitter", 0, "extra random delay in [0, jitter]")
	fs.Float64Var(&c.opts.FailRate, "fail-rate", 0, "probability in [0, 1] that a request fails")
	fs.IntVar(&c.opts.FailStatus, "fail-status", target.DefaultFailStatus, "status of injected failures (400-599)")
	fs.Int64Var(&c.opts.Seed, "seed", 1, "seed of the random draws (same seed, same sequence)")
	fs.StringVar(&c.opts.KeyHeader, "key-header", target.DefaultKeyHeader, "header carrying the job id")
	fs.BoolVar(&c.logRequests, "log", false, "log one line per request to stderr")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 5*time.Second,
		"how long in-flight requests may finish on shutdown before they are cut off")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, usageError{err}
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := c.opts.Validate(); err != nil {
		return c, fmt.Errorf("invalid flags: %w", err)
	}
	if c.shutdownTimeout < 0 {
		return c, fmt.Errorf("invalid flags: shutdown timeout %s is negative", c.shutdownTimeout)
	}
	return c, nil
}

// run serves until ctx ends, then drains and prints the final stats. It is
// main without the process: tests call it with a cancellable ctx.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	tg := target.New(cfg.opts)
	errLog := log.New(stderr, "demotarget: ", log.LstdFlags)
	var handler http.Handler = tg
	if cfg.logRequests {
		handler = logRequests(tg, errLog, cfg.opts.KeyHeader)
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.addr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		// Long enough for any latency knob (capped at target.MaxLatency),
		// short enough that a stuck client cannot hold a connection forever.
		WriteTimeout: target.MaxLatency + time.Minute,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     errLog,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	// Printed only once the socket is bound, so a script that waits for this
	// line can connect at once.
	if _, err := fmt.Fprintf(stdout, "demotarget listening on http://%s\n", ln.Addr()); err != nil {
		_ = srv.Close()
		<-errc
		return fmt.Errorf("writing address: %w", err)
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Requests with long latency knobs are still waiting; closing their
		// connections ends their waits (the target honours the context).
		errLog.Printf("graceful shutdown: %v; closing remaining connections", err)
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}

	b, err := json.Marshal(tg.Stats())
	if err != nil {
		return fmt.Errorf("encoding final stats: %w", err)
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", b); err != nil {
		return fmt.Errorf("writing final stats: %w", err)
	}
	return nil
}

// logRequests logs one line per request, so a demo shows the target's side
// of retries (503, 503, 200) next to the worker's.
func logRequests(next http.Handler, l *log.Logger, keyHeader string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stats" || r.URL.Path == "/reset" {
			next.ServeHTTP(w, r) // not jobs; a script polling /stats would drown the log
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		took := time.Since(start).Round(100 * time.Microsecond)
		key := ""
		if k := r.Header.Get(keyHeader); k != "" {
			key = fmt.Sprintf(" key=%q", k)
		}
		switch {
		case rec.status == 0 && r.Context().Err() != nil:
			l.Printf("%s %s%s -> client gave up after %s", r.Method, r.URL.RequestURI(), key, took)
		case rec.status == 0:
			l.Printf("%s %s%s -> 200 in %s", r.Method, r.URL.RequestURI(), key, took)
		default:
			l.Printf("%s %s%s -> %d in %s", r.Method, r.URL.RequestURI(), key, rec.status, took)
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
