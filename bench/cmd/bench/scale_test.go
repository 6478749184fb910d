package main

import (
	"math"
	"testing"
	"time"
)

func TestTenthRates(t *testing.T) {
	// 100 results one millisecond apart, then 100 two apart: the first
	// half's tenths run at 1,000/s, the second half's at 500/s.
	var times []int64
	at := int64(0)
	for i := range 200 {
		times = append(times, at)
		if i < 100 {
			at += int64(time.Millisecond)
		} else {
			at += int64(2 * time.Millisecond)
		}
	}
	r := tenthRates(times)
	if len(r) != 10 {
		t.Fatalf("got %d tenths", len(r))
	}
	for k, want := range []float64{1000, 1000, 1000, 1000, 1000} {
		if math.Abs(r[k]-want) > 1 {
			t.Errorf("tenth %d: %.1f/s, want %.0f", k, r[k], want)
		}
	}
	for k := 6; k < 10; k++ {
		if math.Abs(r[k]-500) > 1 {
			t.Errorf("tenth %d: %.1f/s, want 500", k, r[k])
		}
	}
	if tenthRates(times[:10]) != nil {
		t.Error("ten results cannot make tenths")
	}
}

func TestLinearFit(t *testing.T) {
	slope, span, ok := linearFit([]float64{0, 1, 2, 3}, []float64{10, 12, 14, 16})
	if !ok || math.Abs(slope-2) > 1e-9 || span != 3 {
		t.Fatalf("slope %v span %v ok %v, want 2, 3, true", slope, span, ok)
	}
	if _, _, ok := linearFit([]float64{1, 1}, []float64{1, 2}); ok {
		t.Error("no spread in x must not fit")
	}
}

func TestBitmapCountsDistinctAndSecond(t *testing.T) {
	b := newBitmap(130)
	for _, i := range []int{0, 63, 64, 129} {
		if b.set(i) {
			t.Fatalf("%d marked before", i)
		}
	}
	if !b.set(64) {
		t.Error("a second mark must be reported")
	}
	if c := b.count(130); c != 4 {
		t.Errorf("count %d, want 4", c)
	}
}

func TestScaleResultsProblem(t *testing.T) {
	if p := (scaleResults{distinct: 5}).problem(5); p != "" {
		t.Errorf("a clean run has a problem: %q", p)
	}
	p := scaleResults{distinct: 4, duplicates: 2, firstDup: "scale-000003"}.problem(5)
	if p != "1 of 5 jobs without a result; 2 second results (first: scale-000003)" {
		t.Errorf("problem %q", p)
	}
}

func TestParseCapacityRows(t *testing.T) {
	// What limitbench printed before issue 17, and the rows it prints with
	// -retry-after and -workers.
	out := "| scenario | limit |\n" +
		"| adaptive concurrency (the default), `JETPOST_MAX_INFLIGHT=200` | 12000 | 489 jobs/s (0.91 × 540) | 13045 requests, 1045 × 429 (8.01%) | 31 | 12000 ok, 0 failed | 25.1s |\n" +
		"| fixed pool of 200: `JETPOST_MAX_INFLIGHT=200` | 12000 | 300 jobs/s (0.50 × 600) | 9 requests, 1 × 429 (50.00%) | 200 | x | 1s |\n" +
		"| adaptive concurrency (the default), `JETPOST_MAX_INFLIGHT=200`; 3 workers; 429 with `Retry-After: 1` | 12000 | 561 jobs/s (0.94 × 600) | 12100 requests, 100 × 429 (0.83%) | 31 | 12000 ok, 0 failed; per worker 4000 / 4000 / 4000 | 21.4s |\n" +
		"| adaptive concurrency (the default), `JETPOST_MAX_INFLIGHT=200`; 1 worker; 429 with `Retry-After:` HTTP date ~1 s ahead | 12000 | 550 jobs/s (0.92 × 600) | 12200 requests, 200 × 429 (1.64%) | 30 | 12000 ok, 0 failed; per worker 12000 | 21.8s |\n"
	cases, err := parseCapacityRows(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []capacityCase{{"none", 1, 489, 8.01}, {"seconds", 3, 561, 0.83}, {"date", 1, 550, 1.64}}
	if len(cases) != len(want) {
		t.Fatalf("got %+v", cases)
	}
	for i := range want {
		if cases[i] != want[i] {
			t.Errorf("row %d: %+v, want %+v", i, cases[i], want[i])
		}
	}
	if _, err := parseCapacityRows("| adaptive concurrency | garbled |\n"); err == nil {
		t.Error("a row without figures must be refused")
	}
}
