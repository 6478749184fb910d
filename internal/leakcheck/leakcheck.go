// Package leakcheck is goleak with a wait a loaded machine cannot outlast.
// goleak retries for about half a second before it calls a goroutine
// leaked; a connection's read loop or a server's handler that is merely
// slow to be scheduled on two busy cores can take longer to exit. Here a
// goroutine counts as leaked only if it is still there after Patience.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Patience bounds the wait for goroutines to exit; a passing test never
// waits it out, so it can be generous.
const Patience = 30 * time.Second

// Find returns goleak's report of the goroutines still running after
// Patience, or nil as soon as none is left.
func Find(opts ...goleak.Option) error {
	// goleak.Find itself retries for about half a second per call.
	return findWithin(Patience, goleak.Find, opts...)
}

// findWithin calls find until it reports nothing or patience has passed.
func findWithin(patience time.Duration, find func(...goleak.Option) error, opts ...goleak.Option) error {
	deadline := time.Now().Add(patience)
	for {
		err := find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// VerifyNone fails t if goroutines other than those opts ignore are still
// running after Patience.
func VerifyNone(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	if err := Find(opts...); err != nil {
		t.Error(err)
	}
}

// VerifyTestMain runs the package's tests and, when they pass, fails the
// run if goroutines are left after Patience, as goleak.VerifyTestMain does.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if err := Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines left after a successful run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// AtEnd checks, once t and its cleanups are over, that t left no goroutine
// behind. Call it first in a test: cleanups run last-registered first.
func AtEnd(t testing.TB) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { VerifyNone(t, opt) })
}
