// Command enqueue validates files of HTTP request descriptions and publishes
// them as jetpost jobs; with --wait it collects their results.
//
// Exit status: 0 every job ok (or published, without --wait); 1 some job
// finally failed or was cancelled; 2 bad usage or invalid input (nothing
// published); 3 the broker could not be reached or refused jobs, or cancel
// timed out; 4 (status, results, dlq, redrive, pause, resume, cancel) no
// such batch; 5 the batch is cancelled (nothing published).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/jetpost/jetpost/internal/termsafe"
)

// buildVersion is set at link time (-ldflags "-X main.buildVersion=...";
// the Makefile and the image use git describe); --version falls back to the
// build information without it.
var buildVersion string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil {
				fmt.Fprintln(os.Stderr, "enqueue:", termsafe.Lines(ee.err.Error()))
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "enqueue:", termsafe.Lines(err.Error()))
		os.Exit(3)
	}
}

// Exit codes, documented in the package comment and the README.
const (
	exitFailedJobs = 1
	exitUsage      = 2
	exitBroker     = 3
	// exitUnknownBatch: no job, result or dead letter was ever stored for
	// the batch named (within the streams' retention).
	exitUnknownBatch = 4
	// exitCancelled: enqueue into a cancelled batch, refused.
	exitCancelled = 5
)

// exitError carries the exit status out of run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }
