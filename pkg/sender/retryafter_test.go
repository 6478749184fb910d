package sender

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	in := func(d time.Duration) time.Time { return now.Add(d) }
	tests := []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"120", 120 * time.Second, true},
		{" 7 ", 7 * time.Second, true},
		{"0", 0, true},
		{"-5", 0, true},
		{"99999999999999999999", maxDuration, true},
		{"-99999999999999999999", 0, true},
		{"9223372037", maxDuration, true}, // seconds that overflow a Duration
		{in(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{in(90 * time.Second).Format(time.RFC850), 90 * time.Second, true},
		{in(90 * time.Second).Format(time.ANSIC), 90 * time.Second, true},
		{in(-time.Hour).Format(http.TimeFormat), 0, true},
		{"", 0, false},
		{"garbage", 0, false},
		{"1.5", 0, false},
		{"-", 0, false},
		{"12s", 0, false},
	}
	for _, tt := range tests {
		d, ok := ParseRetryAfter(tt.v, now)
		if d != tt.want || ok != tt.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.v, d, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "-5", "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "x"} {
		f.Add(s, int64(784111777))
	}
	f.Fuzz(func(t *testing.T, v string, nowUnix int64) {
		now := time.Unix(nowUnix, 0)
		d, ok := ParseRetryAfter(v, now)
		if d < 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v: negative", v, d)
		}
		if !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v with ok=false", v, d)
		}
		// Surrounding white space never changes the answer.
		if d2, ok2 := ParseRetryAfter(" "+v+"\t", now); d2 != d || ok2 != ok {
			t.Fatalf("padding %q changed the result: %v,%v vs %v,%v", v, d2, ok2, d, ok)
		}
		// Any run of digits is valid delta-seconds.
		if s := strings.TrimSpace(v); s != "" && strings.Trim(s, "0123456789") == "" && !ok {
			t.Fatalf("ParseRetryAfter(%q) rejected delta-seconds", v)
		}
	})
}
