package worker

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// BreakerBoard is where breaker states are shared with the fleet.
type BreakerBoard interface {
	Report(ctx context.Context, e queue.BreakerEntry) error
}

// BreakerReporter publishes this worker's breaker transitions to the board.
// Changed never blocks: gobreaker calls it under the breaker's lock, on the
// request path. Run writes the latest state per host in the background and,
// on exit, withdraws this worker's reports (its breakers die with it).
type BreakerReporter struct {
	board  BreakerBoard
	worker string
	log    zerolog.Logger
	// Now stamps transitions (Since); time.Now unless a test sets it.
	Now func() time.Time

	mu      sync.Mutex
	pending map[string]queue.BreakerEntry
	notOK   map[string]bool // hosts reported not closed
	wake    chan struct{}
}

// NewBreakerReporter returns a reporter for worker id.
func NewBreakerReporter(board BreakerBoard, worker string, log zerolog.Logger) *BreakerReporter {
	return &BreakerReporter{board: board, worker: worker, log: log, Now: time.Now,
		pending: map[string]queue.BreakerEntry{}, notOK: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// Changed records a transition (sender.Config.OnBreakerChange).
func (r *BreakerReporter) Changed(host string, _, to job.BreakerState) {
	r.mu.Lock()
	r.pending[host] = queue.BreakerEntry{Host: host, Worker: r.worker, State: to, Since: r.Now().UTC()}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run flushes reports until ctx ends, then withdraws this worker's entries.
func (r *BreakerReporter) Run(ctx context.Context) error {
	for {
		select {
		case <-r.wake:
			r.flush(ctx)
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			defer cancel()
			r.mu.Lock()
			for host := range r.notOK {
				r.pending[host] = queue.BreakerEntry{Host: host, Worker: r.worker, State: job.BreakerClosed}
			}
			r.mu.Unlock()
			r.flush(fctx)
			return nil
		}
	}
}

func (r *BreakerReporter) flush(ctx context.Context) {
	r.mu.Lock()
	batch := r.pending
	r.pending = map[string]queue.BreakerEntry{}
	r.mu.Unlock()
	for host, e := range batch {
		if err := r.board.Report(ctx, e); err != nil {
			r.log.Warn().Err(err).Str("host", host).Msg("sharing breaker state failed")
			continue
		}
		r.mu.Lock()
		if e.State == job.BreakerClosed {
			delete(r.notOK, host)
		} else {
			r.notOK[host] = true
		}
		r.mu.Unlock()
	}
}
