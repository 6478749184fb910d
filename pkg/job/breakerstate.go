package job

// BreakerState is the state of a host's circuit breaker, as the sender
// reports it and the fleet's breaker board stores it. The values are wire
// names (the board's JSON, logs, status output): they never change.
type BreakerState string

// The states of a host's circuit breaker.
const (
	BreakerClosed   BreakerState = "closed"    // requests flow; failures are counted
	BreakerOpen     BreakerState = "open"      // requests are turned away until the open timeout passes
	BreakerHalfOpen BreakerState = "half-open" // a few probes decide between closed and open
)

func (s BreakerState) String() string { return string(s) }
