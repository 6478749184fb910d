package hostlimit

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
)

// Rate is a request rate with a burst: PerSecond on average, at most Burst
// at once.
type Rate struct {
	PerSecond float64
	// Burst is how many requests may start back to back; 0 means the
	// default, a tenth of a second's worth (at least 1).
	Burst int
}

// MaxRate bounds a rate's requests per second; beyond it a limit is not
// a limit.
const MaxRate = 1e6

// MaxSpan is the longest a limit's state has to be remembered: the time its
// burst takes to earn back (burst × interval). The fleet's shared state
// outlives its last use by at least this much (internal/fleetrate), so a
// limit is never forgotten while it still holds requests back.
const MaxSpan = 24 * time.Hour

// MinRate is the slowest rate a limit can keep, one request per MaxSpan:
// 1/d. A slower one is refused where it is written; one that arrives
// otherwise (a batch rate in a job published directly) is held to this.
const MinRate = float64(time.Second) / float64(MaxSpan)

// EffectiveBurst resolves the default burst.
func (r Rate) EffectiveBurst() int {
	if r.Burst > 0 {
		return r.Burst
	}
	return max(1, int(math.Ceil(r.PerSecond/10)))
}

// Interval is the time one request's token takes to earn: at most MaxSpan,
// whatever the rate (a tiny or invalid one would overflow the nanoseconds
// of a time.Duration into no limit at all).
func (r Rate) Interval() time.Duration {
	ns := float64(time.Second) / r.PerSecond
	if !(ns > 0 && ns <= float64(MaxSpan)) { // also NaN, and ±Inf of a zero rate
		return MaxSpan
	}
	return max(time.Duration(ns), 1)
}

// span is the time the burst takes to earn back, bounded by MaxSpan (the
// burst then counts for less) and never less than one interval.
func (r Rate) span() time.Duration {
	iv := r.Interval()
	if b := time.Duration(r.EffectiveBurst()); b <= MaxSpan/iv {
		return b * iv
	}
	return max(MaxSpan, iv)
}

// String writes the rate as ParseRate reads it, in the largest unit in
// which it is at least 1 ("10/s", "30/m", "1/d").
func (r Rate) String() string {
	n, unit := r.PerSecond, "/s"
	for _, u := range []struct {
		name string
		secs float64
	}{{"/m", 60}, {"/h", 3600}, {"/d", 86400}} {
		if n >= 1 {
			break
		}
		n, unit = r.PerSecond*u.secs, u.name
	}
	// Nine significant digits: 1/86400 per second times 86400 is 1.
	n, _ = strconv.ParseFloat(strconv.FormatFloat(n, 'g', 9, 64), 64)
	s := strconv.FormatFloat(n, 'f', -1, 64) + unit
	if r.Burst > 0 {
		s += ":" + strconv.Itoa(r.Burst)
	}
	return s
}

// ParseRate reads "N/s", "N/m", "N/h" or "N/d" (N may be fractional),
// optionally followed by ":BURST", e.g. "100/s:20" or "600/m". It refuses
// a rate below MinRate, and a burst that takes longer than MaxSpan to earn
// back.
func ParseRate(s string) (Rate, error) {
	spec, burstText, hasBurst := strings.Cut(strings.TrimSpace(s), ":")
	num, unit, ok := strings.Cut(spec, "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want N/s, N/m, N/h or N/d, optionally :BURST (e.g. 100/s:20)", s)
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) || n <= 0 {
		return Rate{}, fmt.Errorf("rate %q: %q is not a positive number", s, num)
	}
	switch strings.TrimSpace(unit) {
	case "s":
	case "m":
		n /= 60
	case "h":
		n /= 3600
	case "d":
		n /= 86400
	default:
		return Rate{}, fmt.Errorf("rate %q: unit %q is not s, m, h or d", s, unit)
	}
	if n > MaxRate {
		return Rate{}, fmt.Errorf("rate %q: more than %v per second", s, float64(MaxRate))
	}
	if n < MinRate*(1-1e-9) { // "1/d" itself, whatever the rounding
		return Rate{}, fmt.Errorf("rate %q: less than 1 per day (1/d), the slowest rate a limit keeps", s)
	}
	r := Rate{PerSecond: max(n, MinRate)}
	if hasBurst {
		b, err := strconv.Atoi(strings.TrimSpace(burstText))
		if err != nil || b < 1 || b > 1_000_000 {
			return Rate{}, fmt.Errorf("rate %q: burst %q is not a whole number from 1 to 1000000", s, burstText)
		}
		r.Burst = b
		if earn := float64(b) / r.PerSecond; earn > MaxSpan.Seconds()*(1+1e-9) {
			return Rate{}, fmt.Errorf("rate %q: a burst of %d takes %.1fh to earn back at this rate, more than the %gh a limit's state is kept",
				s, b, earn/3600, MaxSpan.Hours())
		}
	}
	return r, nil
}

// ParseBatchRate reads a per-batch rate (enqueue --rate): like ParseRate
// but without a burst, which a batch cannot choose; it returns requests
// per second.
func ParseBatchRate(s string) (float64, error) {
	r, err := ParseRate(s)
	if err != nil {
		return 0, err
	}
	if r.Burst > 0 {
		return 0, fmt.Errorf("rate %q: a batch's rate takes no burst (the default is a tenth of a second's worth)", s)
	}
	return r.PerSecond, nil
}

// Rule limits the hosts that match Pattern to Rate each.
type Rule struct {
	Pattern string // as written, lower-cased: "api.example.com:8443", "*.example.org", "*"
	Rate    Rate

	host     string // the name, or for a wildcard the suffix after "*."
	port     string // "" matches any port
	wildcard bool
}

// Rules is a set of per-host rate limits, as JETPOST_RATE_LIMITS gives them.
type Rules struct{ rules []Rule }

// ParseRules reads a comma-separated list of HOST[:PORT]=RATE entries,
// e.g. "api.example.com=100/s:20, *.example.org=10/s, 10.0.0.7:8080=5/s".
// "*.example.org" matches every name under example.org (not example.org
// itself); a lone "*" matches every host. A pattern without a port matches
// any port. An empty string is no rules.
func ParseRules(s string) (Rules, error) {
	var rs Rules
	seen := map[string]bool{}
	var errs []error
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		pat, rate, ok := strings.Cut(entry, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("%q: want HOST[:PORT]=N/s[:BURST]", entry))
			continue
		}
		r, err := ParseRate(rate)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q: %w", entry, err))
			continue
		}
		rule, err := parsePattern(strings.ToLower(strings.TrimSpace(pat)))
		if err != nil {
			errs = append(errs, fmt.Errorf("%q: %w", entry, err))
			continue
		}
		if seen[rule.Pattern] {
			errs = append(errs, fmt.Errorf("%q: host pattern %q is listed twice", entry, rule.Pattern))
			continue
		}
		seen[rule.Pattern] = true
		rule.Rate = r
		rs.rules = append(rs.rules, rule)
	}
	return rs, errors.Join(errs...)
}

func parsePattern(p string) (Rule, error) {
	rule := Rule{Pattern: p}
	if p == "*" {
		rule.wildcard = true
		return rule, nil
	}
	host := p
	switch {
	case strings.HasPrefix(p, "["):
		end := strings.Index(p, "]")
		if end < 0 {
			return rule, fmt.Errorf("host %q: missing ]", p)
		}
		host = p[1:end]
		if rest := p[end+1:]; rest != "" {
			port, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return rule, fmt.Errorf("host %q: want [ADDRESS]:PORT", p)
			}
			rule.port = port
		}
		if net.ParseIP(host) == nil {
			return rule, fmt.Errorf("host %q: %q is not an IP address", p, host)
		}
	case strings.Count(p, ":") == 1:
		host, rule.port, _ = strings.Cut(p, ":")
	case strings.Count(p, ":") > 1:
		return rule, fmt.Errorf("host %q: write an IPv6 address in brackets, [ADDRESS] or [ADDRESS]:PORT", p)
	}
	if rule.port != "" {
		if n, err := strconv.Atoi(rule.port); err != nil || n < 1 || n > 65535 {
			return rule, fmt.Errorf("host %q: port %q is not 1 to 65535", p, rule.port)
		}
	}
	if suffix, ok := strings.CutPrefix(host, "*."); ok {
		rule.wildcard = true
		host = suffix
	}
	if host == "" || strings.ContainsAny(host, "*/?#@ \t") || strings.HasPrefix(host, ".") || strings.HasSuffix(host, ".") {
		return rule, fmt.Errorf("host %q is not a host name, an address or *.DOMAIN", p)
	}
	rule.host = host
	return rule, nil
}

// Len is the number of rules.
func (rs Rules) Len() int { return len(rs.rules) }

// List returns the rules in the order they were given.
func (rs Rules) List() []Rule { return append([]Rule(nil), rs.rules...) }

// Match returns the rate for hostport ("api.example.com:443"; the port is
// optional): the most specific rule wins, an exact name over a wildcard, a
// named port over any port, a longer wildcard suffix over a shorter one.
func (rs Rules) Match(hostport string) (Rate, bool) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), ""
	}
	host = strings.ToLower(host)
	best, bestScore := Rule{}, -1
	for _, r := range rs.rules {
		if r.port != "" && r.port != port {
			continue
		}
		score := 0
		switch {
		case !r.wildcard && r.host == host:
			score = 3 << 20
		case r.wildcard && r.host == "":
			score = 1 // "*"
		case r.wildcard && strings.HasSuffix(host, "."+r.host):
			score = 2<<20 + len(r.host)
		default:
			continue
		}
		if r.port != "" {
			score += 1 << 19
		}
		if score > bestScore {
			best, bestScore = r, score
		}
	}
	return best.Rate, bestScore >= 0
}
