package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("full sleep: %v", err)
	}
	if err := Sleep(context.Background(), 0); err != nil {
		t.Fatalf("zero sleep: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("ended context: got %v, want context.Canceled", err)
	}
	if err := Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ended context, zero sleep: got %v, want context.Canceled", err)
	}
}

func TestLinear(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		n           int
		step, limit time.Duration
		want        time.Duration
	}{
		{1, 250 * ms, 5 * time.Second, 250 * ms},
		{4, 250 * ms, 5 * time.Second, time.Second},
		{100, 250 * ms, 5 * time.Second, 5 * time.Second},
		{100, 200 * ms, 0, 20 * time.Second},
	} {
		if got := Linear(tc.n, tc.step, tc.limit); got != tc.want {
			t.Errorf("Linear(%d, %v, %v) = %v, want %v", tc.n, tc.step, tc.limit, got, tc.want)
		}
	}
}

func TestDo(t *testing.T) {
	errBusy, errFinal := errors.New("busy"), errors.New("final")
	noPause := func(int) time.Duration { return 0 }
	t.Run("succeeds after failures", func(t *testing.T) {
		var tries []int
		calls := 0
		err := Do(context.Background(), Policy{PerTry: time.Minute, Pause: noPause,
			OnRetry: func(err error, n int) { tries = append(tries, n) }},
			func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("a try has no deadline")
				}
				if calls++; calls < 3 {
					return errBusy
				}
				return nil
			})
		if err != nil || calls != 3 || len(tries) != 2 || tries[0] != 1 || tries[1] != 2 {
			t.Fatalf("err %v, calls %d, retries %v; want nil, 3, [1 2]", err, calls, tries)
		}
	})
	t.Run("final error stops", func(t *testing.T) {
		calls := 0
		err := Do(context.Background(), Policy{PerTry: time.Minute, Pause: noPause,
			Final: func(err error) bool { return errors.Is(err, errFinal) }},
			func(context.Context) error {
				if calls++; calls < 2 {
					return errBusy
				}
				return errFinal
			})
		if !errors.Is(err, errFinal) || calls != 2 {
			t.Fatalf("err %v, calls %d; want final after 2", err, calls)
		}
	})
	t.Run("ended context stops", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := Do(ctx, Policy{PerTry: time.Minute, Pause: func(int) time.Duration { return time.Hour }},
			func(context.Context) error {
				calls++
				cancel()
				return errBusy
			})
		if !errors.Is(err, errBusy) || calls != 1 {
			t.Fatalf("err %v, calls %d; want busy after 1", err, calls)
		}
	})
	t.Run("ended while pausing stops", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := Do(ctx, Policy{PerTry: time.Minute, Pause: func(int) time.Duration { return time.Hour },
			OnRetry: func(error, int) { cancel() }}, // ends the context just before the pause
			func(context.Context) error {
				calls++
				return errBusy
			})
		if !errors.Is(err, errBusy) || calls != 1 {
			t.Fatalf("err %v, calls %d; want busy after 1 (no try after the pause was cut short)", err, calls)
		}
	})
}
