package fleetrate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BoardFresh is how recent a worker's post must be for a batch fence, or
// a rescue's census, to wait for its answer: workers post every 5s, and
// one killed lingers on the board until its entry expires.
const BoardFresh = 15 * time.Second

// ReadBoard is every running worker's post on the limits board; none
// when no worker has posted yet.
func ReadBoard(ctx context.Context, js jetstream.JetStream, prefix string) ([]WorkerLimits, error) {
	board, err := OpenBoardReadOnly(ctx, js, prefix)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("host limits: %w", err)
	}
	ws, err := board.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("host limits: %w", err)
	}
	return ws, nil
}

// ExpectedWorkers names the workers that posted on the limits board
// recently: those a fence waits for. None if the board cannot be read.
func ExpectedWorkers(ctx context.Context, js jetstream.JetStream, prefix string, now time.Time) []string {
	ws, err := ReadBoard(ctx, js, prefix)
	if err != nil {
		return nil
	}
	return FreshWorkers(ws, now)
}

// FreshWorkers names the workers of ws that posted within BoardFresh of
// now: those a fence or a census waits for.
func FreshWorkers(ws []WorkerLimits, now time.Time) []string {
	var out []string
	for _, w := range ws {
		if now.Sub(w.At) < BoardFresh {
			out = append(out, w.Worker)
		}
	}
	return out
}
