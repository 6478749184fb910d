package queue

import (
	"time"

	"github.com/jetpost/jetpost/pkg/retry"
)

// brokerPause is the pause after failed try n of an operation that waits
// for the broker to come back.
func brokerPause(n int) time.Duration { return retry.Linear(n, 250*time.Millisecond, 5*time.Second) }
