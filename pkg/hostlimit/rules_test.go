package hostlimit

import (
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in    string
		per   float64
		burst int
	}{
		{"100/s", 100, 0},
		{"100/s:20", 100, 20},
		{" 600/m ", 10, 0},
		{"3600/h:5", 1, 5},
		{"0.5/s", 0.5, 0},
	} {
		r, err := ParseRate(tc.in)
		if err != nil {
			t.Errorf("ParseRate(%q): %v", tc.in, err)
			continue
		}
		if r.PerSecond != tc.per || r.Burst != tc.burst {
			t.Errorf("ParseRate(%q) = %+v, want %v/s burst %d", tc.in, r, tc.per, tc.burst)
		}
	}
	for _, in := range []string{"", "100", "0/s", "-1/s", "NaN/s", "Inf/s", "1/w", "1/s:0", "1/s:x", "2e6/s", "x/s"} {
		if _, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted", in)
		}
	}
	if _, err := ParseBatchRate("10/s:3"); err == nil {
		t.Error("ParseBatchRate accepted a burst")
	}
	if r, err := ParseBatchRate("120/m"); err != nil || r != 2 {
		t.Errorf("ParseBatchRate(120/m) = %v, %v; want 2", r, err)
	}
}

func TestRateDefaults(t *testing.T) {
	for _, tc := range []struct {
		r     Rate
		burst int
	}{
		{Rate{PerSecond: 100}, 10},
		{Rate{PerSecond: 5}, 1},
		{Rate{PerSecond: 0.1}, 1},
		{Rate{PerSecond: 101}, 11},
		{Rate{PerSecond: 100, Burst: 3}, 3},
	} {
		if got := tc.r.EffectiveBurst(); got != tc.burst {
			t.Errorf("%v: burst %d, want %d", tc.r, got, tc.burst)
		}
	}
	if got := (Rate{PerSecond: 100, Burst: 20}).String(); got != "100/s:20" {
		t.Errorf("String = %q", got)
	}
}

func TestRulesMatchMostSpecific(t *testing.T) {
	rs, err := ParseRules("api.example.com=100/s:20, api.example.com:8443=5/s, *.example.com=10/s, *.eu.example.com=7/s, *=1/s, [2001:db8::1]:8080=3/s, 10.0.0.7=4/s")
	if err != nil {
		t.Fatal(err)
	}
	if rs.Len() != 7 {
		t.Fatalf("%d rules, want 7", rs.Len())
	}
	for _, tc := range []struct {
		host string
		per  float64
	}{
		{"api.example.com:443", 100},
		{"API.example.com:80", 100},
		{"api.example.com:8443", 5},
		{"www.example.com:443", 10},
		{"a.b.example.com:443", 10},
		{"x.eu.example.com:443", 7},
		{"example.com:443", 1}, // not under *.example.com
		{"other.org:443", 1},
		{"[2001:db8::1]:8080", 3},
		{"[2001:db8::1]:80", 1},
		{"10.0.0.7:9000", 4},
		{"api.example.com", 100}, // no port: still the name
	} {
		r, ok := rs.Match(tc.host)
		if !ok || r.PerSecond != tc.per {
			t.Errorf("Match(%q) = %v, %v; want %v/s", tc.host, r, ok, tc.per)
		}
	}
	none, _ := ParseRules("")
	if _, ok := none.Match("api.example.com:443"); ok {
		t.Error("no rules matched a host")
	}
}

func TestParseRulesErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"api.example.com", "want HOST[:PORT]=N/s"},
		{"api.example.com=fast", "want N/s"},
		{"a.com=1/s,a.com=2/s", "listed twice"},
		{"a.com:0=1/s", "port"},
		{"a.com:x=1/s", "port"},
		{"2001:db8::1=1/s", "brackets"},
		{"[nothost]=1/s", "not an IP"},
		{"*.=1/s", "not a host"},
		{"a/b=1/s", "not a host"},
		{"=1/s", "not a host"},
	} {
		_, err := ParseRules(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRules(%q) = %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
	// Every bad entry is reported, not only the first.
	_, err := ParseRules("a=1,b=2")
	if err == nil || strings.Count(err.Error(), "\n") != 1 {
		t.Errorf("two bad entries: %v", err)
	}
}
