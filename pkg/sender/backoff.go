package sender

import "time"

// Backoff is exponential backoff with full jitter: the delay after the n-th
// attempt is uniform in [0, min(Cap, Base·2^(n-1))]. Full jitter spreads the
// retries of jobs that failed together (one host down, thousands of jobs)
// instead of sending them back in synchronised waves.
type Backoff struct {
	Base time.Duration
	Cap  time.Duration // <= 0: no cap other than the largest Duration
}

// Delay returns the wait before the next attempt, given the number of
// attempts already made (values below 1 count as 1). rnd returns a value in
// [0, 1); callers pass rand.Float64, tests a constant.
func (b Backoff) Delay(attempt int, rnd func() float64) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	limit := b.Cap
	if limit <= 0 {
		limit = maxDuration
	}
	ceiling := limit
	// Base·2^(n-1) <= limit  ⇔  Base <= limit >> (n-1); shifting the limit
	// down instead of Base up cannot overflow.
	if shift := max(attempt, 1) - 1; shift < 63 && b.Base <= limit>>shift {
		ceiling = b.Base << shift
	}
	r := rnd()
	if !(r > 0) { // also catches NaN
		return 0
	}
	f := r * float64(ceiling)
	if f >= float64(ceiling) { // r >= 1, or rounding at the top of the range
		return ceiling
	}
	return time.Duration(f)
}
