package queue

import (
	"context"
	"time"
)

// retryBackoff is the pause after failed try n (from 1) of an operation
// that waits for the broker to come back: linear, so a short outage costs little, and
// capped, so a long one is noticed within seconds of its end.
func retryBackoff(n int) time.Duration {
	return min(time.Duration(n)*250*time.Millisecond, 5*time.Second)
}

// sleepCtx waits for d, or less if ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// durably runs op until it succeeds, fails for good (final), or ctx ends.
// Each try is cut at perTry: during a leader election a request gets no
// answer, and the next try after the election succeeds at once. onRetry
// hears of every failure that is tried again.
func durably(ctx context.Context, perTry time.Duration, op func(context.Context) error, final func(error) bool, onRetry func(err error, try int)) error {
	for try := 1; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, perTry)
		err := op(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || final(err) {
			return err
		}
		onRetry(err, try)
		sleepCtx(ctx, retryBackoff(try))
	}
}
