package queue

import (
	"context"
	"sync"
	"sync/atomic"
)

// rerun runs a piece of background work on request, one run at a time: a
// request while it runs makes it run once more when done (the sign may be
// of a later leader change than the one it is dealing with).
type rerun struct {
	running atomic.Bool
	again   atomic.Bool
}

// request starts work on a goroutine counted in wg, or has the run under
// way run once more.
func (r *rerun) request(ctx context.Context, wg *sync.WaitGroup, work func(context.Context)) {
	r.again.Store(true)
	if !r.running.CompareAndSwap(false, true) {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			for ctx.Err() == nil && r.again.Swap(false) {
				work(ctx)
			}
			r.running.Store(false)
			// A request that came as this loop ended found it still running.
			if !r.again.Load() || ctx.Err() != nil || !r.running.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

// pending reports whether a request waits for the run under way to end.
func (r *rerun) pending() bool { return r.again.Load() }

// inBackground has r run work on Run's context (Run waits for it before
// it returns), unless Run is not running.
func (c *Consumer) inBackground(r *rerun, work func(context.Context)) {
	ctx := c.life
	if ctx == nil || ctx.Err() != nil {
		return
	}
	r.request(ctx, &c.background, work)
}
