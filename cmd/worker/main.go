// Command worker is the jetpost daemon: it pulls jobs from JetStream, sends
// them with a bounded number in flight, and stores one result per job.
// Configuration comes from JETPOST_* environment variables; run `worker -h`
// to list them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// buildVersion is set at link time (-ldflags "-X main.buildVersion=...";
// the Makefile and the image use git describe); --version falls back to the
// build information without it.
var buildVersion string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// usageError marks errors in arguments or configuration: exit status 2,
// before anything connects.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }
