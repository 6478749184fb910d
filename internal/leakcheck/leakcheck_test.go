package leakcheck

import (
	"errors"
	"testing"

	"go.uber.org/goleak"
)

// Goroutines that exit late are waited for; ones that stay are reported
// once patience is spent.
func TestFindWaitsForLateGoroutines(t *testing.T) {
	leaked := errors.New("found unexpected goroutines")
	calls := 0
	late := func(...goleak.Option) error {
		if calls++; calls < 3 {
			return leaked
		}
		return nil
	}
	if err := findWithin(Patience, late); err != nil || calls != 3 {
		t.Errorf("late exit: %v after %d calls; want nil after 3", err, calls)
	}
	calls = 0
	stuck := func(...goleak.Option) error { calls++; return leaked }
	if err := findWithin(0, stuck); !errors.Is(err, leaked) || calls != 1 {
		t.Errorf("stuck goroutine with no patience: %v after %d calls; want the report after 1", err, calls)
	}
}

func TestVerifyNoneWithNothingLeft(t *testing.T) {
	AtEnd(t)
	done := make(chan struct{})
	go func() { close(done) }()
	<-done
}
