package console

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/dlqview"
	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/queue"
)

// source is what the page shows, read from where the state lives.
type source interface {
	Status(ctx context.Context, rateWindow time.Duration) (queue.Overview, error)
	Board(ctx context.Context) ([]fleetrate.WorkerLimits, error)
}

// natsSource reads and changes the state in NATS with the library code
// enqueue status, dlq, redrive, pause, resume and cancel use.
type natsSource struct {
	js    jetstream.JetStream
	names queue.Names
	now   func() time.Time
}

func (s *natsSource) Status(ctx context.Context, rateWindow time.Duration) (queue.Overview, error) {
	return queue.Status(ctx, s.js, s.names, "", queue.StatusOptions{RateWindow: rateWindow, Now: s.now})
}

func (s *natsSource) Board(ctx context.Context) ([]fleetrate.WorkerLimits, error) {
	return fleetrate.ReadBoard(ctx, s.js, s.names.Prefix)
}

// errUnknownBatch: nothing is stored for the batch and it has no entry.
var errUnknownBatch = errors.New("unknown batch: no jobs, results or dead letters are stored for it")

// known reports whether batch has an entry or anything stored, as
// enqueue checks, so that an action on a typo does not create a batch.
func (s *natsSource) known(ctx context.Context, batch string) error {
	known, err := queue.BatchKnown(ctx, s.js, s.names, batch)
	if err != nil {
		return err
	}
	if !known {
		return errUnknownBatch
	}
	return nil
}

// control pauses, resumes or cancels batch, with the fence waiting for
// the workers that posted on the limits board lately, as enqueue does.
func (s *natsSource) control(ctx context.Context, action, batch string) (*queue.ControlReport, error) {
	ctl, err := queue.NewControl(ctx, s.js, s.names)
	if err != nil {
		return nil, err
	}
	ctl.Fence.Expect = fleetrate.ExpectedWorkers(ctx, s.js, s.names.Prefix, s.now())
	switch action {
	case "pause":
		return ctl.Pause(ctx, batch)
	case "resume":
		return ctl.Resume(ctx, batch)
	case "cancel":
		return ctl.Cancel(ctx, batch, queue.CancelOptions{Timeout: queue.DefaultCancelTimeout})
	}
	return nil, fmt.Errorf("unknown action %q", action)
}

func (s *natsSource) redrive(ctx context.Context, batch string) (queue.RedriveReport, error) {
	return queue.Redrive(ctx, s.js, s.names, batch)
}

// errEnough stops a listing at its limit.
var errEnough = errors.New("enough")

// deadLetters lists at most limit of batch's dead letters, without their
// jobs, the result's URL redacted;
// more says some were left out.
func (s *natsSource) deadLetters(ctx context.Context, batch string, limit int) (out []dlqview.Shown, more bool, err error) {
	err = queue.DeadLetters(ctx, s.js, s.names, batch, func(dl queue.StoredDeadLetter) error {
		if len(out) == limit {
			more = true
			return errEnough
		}
		out = append(out, dlqview.Summary(dl))
		return nil
	})
	if errors.Is(err, errEnough) || errors.Is(err, jetstream.ErrStreamNotFound) {
		err = nil
	}
	return out, more, err
}
