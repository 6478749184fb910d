package hostlimit

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/sender"
)

// A rate too slow for a limit to keep is refused where it is written, with
// a message that says so; 1/d, the slowest, is accepted.
func TestParseRateRefusesTinyRates(t *testing.T) {
	for _, in := range []string{"1e-11/s", "1e-300/s", "0.5/d", "0.01/h", "4.9e-324/s"} {
		_, err := ParseRate(in)
		if err == nil || !strings.Contains(err.Error(), "less than 1 per day") {
			t.Errorf("ParseRate(%q) = %v, want a refusal naming the minimum", in, err)
		}
		if _, err := ParseBatchRate(in); err == nil {
			t.Errorf("ParseBatchRate(%q) accepted", in)
		}
		if _, err := ParseRules("api.example.com=" + in); err == nil {
			t.Errorf("ParseRules(api.example.com=%s) accepted", in)
		}
	}
	// A burst is bounded by the time it takes to earn back.
	for _, in := range []string{"1/h:25", "1/s:100000", "1/d:2"} {
		if _, err := ParseRate(in); err == nil || !strings.Contains(err.Error(), "to earn back") {
			t.Errorf("ParseRate(%q) = %v, want a refusal of the burst", in, err)
		}
	}
	for in, want := range map[string]string{"1/d": "1/d", "24/d": "1/h", "1/h:24": "1/h:24", "0.5/m": "30/h", "2/s": "2/s"} {
		r, err := ParseRate(in)
		if err != nil {
			t.Errorf("ParseRate(%q): %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("ParseRate(%q).String() = %q, want %q", in, r, want)
		}
		if back, err := ParseRate(r.String()); err != nil || back.String() != want {
			t.Errorf("ParseRate(%q) = %v, %v: String does not read back", r.String(), back, err)
		}
	}
}

// However a rate arrives, its interval is a positive duration no longer
// than MaxSpan: never an overflow into a nanosecond (no limit at all).
func TestIntervalSaturates(t *testing.T) {
	for _, per := range []float64{1e-11, 1e-300, 5e-324, 0, -1, math.NaN(), MinRate / 2} {
		if got := (Rate{PerSecond: per}).Interval(); got != MaxSpan {
			t.Errorf("Rate{%v}.Interval() = %v, want %v", per, got, MaxSpan)
		}
	}
	if got := (Rate{PerSecond: MinRate}).Interval(); got < MaxSpan-time.Microsecond || got > MaxSpan {
		t.Errorf("Rate{MinRate}.Interval() = %v, want %v", got, MaxSpan)
	}
	// A burst that would take longer than MaxSpan to earn back counts as
	// what MaxSpan earns: the grant's arithmetic stays in range.
	now := int64(1.8e18)
	for _, r := range []Rate{{PerSecond: 1e-5, Burst: 1_000_000}, {PerSecond: 1, Burst: 1_000_000}, {PerSecond: 1e-11, Burst: 7}} {
		tat, n, _ := grant(0, now, r, math.MaxInt32)
		if want := int(MaxSpan / r.Interval()); n != max(1, want) || tat < now || tat > now+int64(MaxSpan) {
			t.Errorf("%+v: fresh bucket granted %d (tat now%+d), want %d within MaxSpan", r, n, tat-now, max(1, want))
		}
	}
}

// The reproduction: a batch rate of 1e-11/s (a job published straight onto
// the stream can carry one) admitted every request; it admits one, and the
// next only after a day.
func TestTinyBatchRateStillLimits(t *testing.T) {
	clock := newClock()
	l, _ := New(Config{MaxInflight: 100, Now: clock.now})
	a := sender.AdmitRequest{Host: "api.example.com:443", Batch: "b1", BatchRate: 1e-11}
	admitted := 0
	for step := 0; step < 3600; step++ { // an hour, a try a second
		if rel, na := admit(t, l, a); na == nil {
			admitted++
			rel.Done(sender.Feedback{Sent: true, Status: 200})
		}
		clock.advance(time.Second)
	}
	if admitted != 1 {
		t.Fatalf("a batch at 1e-11/s was admitted %d times in an hour, want 1 (its burst)", admitted)
	}
	clock.advance(MaxSpan)
	if rel, na := admit(t, l, a); na != nil {
		t.Fatalf("refused a day later: %v", na)
	} else {
		rel.Done(sender.Feedback{Sent: true, Status: 200})
	}
}
