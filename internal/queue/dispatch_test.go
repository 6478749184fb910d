package queue

import "testing"

// A lane's part of the window follows its weight, never below one job,
// and a lone lane refills as the single shared consumer did (at half the
// prefetch).
func TestQuotaAndRefill(t *testing.T) {
	const prefetch, window = 16, 80
	for _, tc := range []struct{ weight, sum, quota, refill int }{
		{WeightNormal, WeightNormal, window, prefetch / 2},
		{WeightNormal, 2 * WeightNormal, window / 2, prefetch / 4},
		{WeightHigh, WeightHigh + WeightNormal, 64, 6},
		{WeightNormal, WeightHigh + WeightNormal, 16, 1},
		{WeightLow, 1000 * WeightNormal, 1, 1},
	} {
		q := quota(window, tc.weight, tc.sum)
		if r := refill(q, prefetch, window); q != tc.quota || r != tc.refill {
			t.Errorf("weight %d of %d: quota %d refill %d, want %d and %d", tc.weight, tc.sum, q, r, tc.quota, tc.refill)
		}
	}
}
