// Package retry is how jetpost waits: between tries of an operation that
// fails while a peer (most often the broker) is unreachable, and for a pause
// that must end early when its context does.
package retry

import (
	"context"
	"time"
)

// Sleep waits for d, or less if ctx ends first; it returns ctx's error
// then. A d of zero or less does not wait.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Linear is the pause after failed try n (from 1): n steps, so a short
// outage costs little, capped at limit (0: no cap), so a long one is noticed
// soon after its end.
func Linear(n int, step, limit time.Duration) time.Duration {
	d := time.Duration(n) * step
	if limit > 0 {
		d = min(d, limit)
	}
	return d
}

// Policy says how Do tries again.
type Policy struct {
	// PerTry cuts each try: during a leader election a request gets no
	// answer, and the next try after the election succeeds at once.
	PerTry time.Duration
	// Pause is the wait after failed try n (from 1), e.g. Linear.
	Pause func(n int) time.Duration
	// Final reports an error that trying again cannot cure; nil: none is.
	Final func(error) bool
	// OnRetry hears of every failure that is tried again; may be nil.
	OnRetry func(err error, n int)
}

// Do runs op until it succeeds, fails for good (p.Final), or ctx ends, and
// returns op's last error.
func Do(ctx context.Context, p Policy, op func(context.Context) error) error {
	for n := 1; ; n++ {
		tctx, cancel := context.WithTimeout(ctx, p.PerTry)
		err := op(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || (p.Final != nil && p.Final(err)) {
			return err
		}
		if p.OnRetry != nil {
			p.OnRetry(err, n)
		}
		if Sleep(ctx, p.Pause(n)) != nil {
			return err // ended while pausing: the last failure, not another try
		}
	}
}
