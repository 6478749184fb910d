package sender

import (
	"math"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Cap: 10 * time.Second}
	zero := func() float64 { return 0 }
	top := func() float64 { return 0.9999999 }

	for attempt, ceiling := range map[int]time.Duration{
		0:   100 * time.Millisecond, // counts as the first
		1:   100 * time.Millisecond,
		2:   200 * time.Millisecond,
		3:   400 * time.Millisecond,
		7:   6400 * time.Millisecond,
		8:   10 * time.Second, // 12.8s capped
		63:  10 * time.Second,
		64:  10 * time.Second,
		100: 10 * time.Second, // 2^99 must not overflow into a tiny or negative delay
	} {
		if d := b.Delay(attempt, zero); d != 0 {
			t.Errorf("attempt %d, rnd=0: %v, want 0", attempt, d)
		}
		d := b.Delay(attempt, top)
		if d > ceiling || d < ceiling*999/1000 {
			t.Errorf("attempt %d, rnd≈1: %v, want just under %v", attempt, d, ceiling)
		}
	}

	uncapped := Backoff{Base: time.Second}
	for _, attempt := range []int{40, 62, 63, 64, 100, math.MaxInt} {
		if d := uncapped.Delay(attempt, top); d <= 0 {
			t.Errorf("uncapped attempt %d: %v overflowed", attempt, d)
		}
	}
	if d := (Backoff{Base: maxDuration, Cap: maxDuration}).Delay(2, func() float64 { return 1 }); d != maxDuration {
		t.Errorf("rnd=1 at the top of the range: %v", d)
	}
	if d := b.Delay(3, math.NaN); d != 0 {
		t.Errorf("rnd=NaN: %v", d)
	}
	if d := (Backoff{}).Delay(5, top); d != 0 {
		t.Errorf("zero base: %v", d)
	}
}
