package sender

import (
	"errors"
	"fmt"
	"time"
)

// Sending is how many of Config.MaxRequests places are taken now: requests
// in flight (0 when MaxRequests is 0, which does not count them). With
// Queued it tells an autoscaler what this process is busy with.
func (s *Sender) Sending() int { return len(s.places) }

// noPlaceError: a request with a rate token waited too long for one of
// Config.MaxRequests places.
type noPlaceError struct {
	waited time.Duration
	places int
}

func (e *noPlaceError) Error() string {
	return fmt.Sprintf("waited %v for one of %d places with a rate token", e.waited.Round(time.Millisecond), e.places)
}

// OwnCapacity reports whether a Postponed outcome's error says the request
// waited for this process's own room (one of its request places, or a
// host concurrency limit at its configured ceiling) rather than for the
// host (a limit the host's answers lowered, a rate, an open breaker).
func OwnCapacity(err error) bool {
	var np *noPlaceError
	var na *NotAdmittedError
	return errors.As(err, &np) || (errors.As(err, &na) && na.AtCeiling)
}
