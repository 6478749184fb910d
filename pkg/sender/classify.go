package sender

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Verdicts reported to a host's breaker. A nil verdict is a success.
var (
	errHostFailure = errors.New("host failure")
	// errNeutral is excluded from the breaker's counts: it says nothing
	// about the host's health either way.
	errNeutral = errors.New("says nothing about the host")

	errTooManyRedirects = errors.New("too many redirects")
	// errUnfollowableRedirect: the Location names a scheme other than
	// http or https, or no host. The next try would be redirected alike.
	errUnfollowableRedirect = errors.New("redirect cannot be followed")
	// errHeaderLimit: the answer's headers exceeded the configured limit.
	errHeaderLimit = errors.New("response headers too large")
)

// verdict is the classification of one attempt.
type verdict struct {
	class   Class
	breaker error // nil, errHostFailure or errNeutral
	refused bool  // the guard refused an address
}

// classify is the one place that decides what an attempt's result means, for
// the job (its Class) and for the host's breaker. ctx is the caller's context,
// status 0 when no response arrived, err the transport or body error.
//
// The breaker counts only signs that the host is down or broken (network
// errors, timeouts, 5xx). A 4xx proves the host is up; 408/425/429 ask us to
// slow down, which retries with backoff already do; a refused address or a
// cancelled caller says nothing about the host at all.
func (s *Sender) classify(ctx context.Context, status int, err error) verdict {
	if err != nil {
		var refused *RefusedError
		switch {
		case ctx.Err() != nil:
			// Shutdown must not open breakers: otherwise a restart would
			// begin with every busy host deferred.
			return verdict{class: Retryable, breaker: errNeutral}
		case errors.As(err, &refused):
			return verdict{class: Permanent, breaker: errNeutral, refused: true}
		case errors.Is(err, errTooManyRedirects), errors.Is(err, errUnfollowableRedirect), errors.Is(err, errHeaderLimit):
			return verdict{class: Permanent} // the host answered; it would again
		default: // network error, timeout, reset, broken body
			return verdict{class: Retryable, breaker: errHostFailure}
		}
	}
	switch {
	case s.cfg.RetryStatuses.Contains(status):
		return verdict{class: Retryable, breaker: statusVerdict(status)}
	case status >= 400:
		return verdict{class: Permanent, breaker: statusVerdict(status)}
	default:
		return verdict{class: Succeeded}
	}
}

func statusVerdict(status int) error {
	if status >= 500 {
		return errHostFailure
	}
	return nil
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ From, To int }

// StatusSet is a set of HTTP status codes, as ranges. A nil StatusSet in
// Config means DefaultRetryStatuses; an empty non-nil one retries no status.
type StatusSet []StatusRange

// DefaultRetryStatuses returns 408, 425, 429 and 500-599.
func DefaultRetryStatuses() StatusSet {
	return StatusSet{{408, 408}, {425, 425}, {429, 429}, {500, 599}}
}

// Contains reports whether code is in the set.
func (s StatusSet) Contains(code int) bool {
	for _, r := range s {
		if code >= r.From && code <= r.To {
			return true
		}
	}
	return false
}

// String renders the set in the form ParseStatusSet reads.
func (s StatusSet) String() string {
	parts := make([]string, 0, len(s))
	for _, r := range s {
		switch {
		case r.From == r.To:
			parts = append(parts, strconv.Itoa(r.From))
		case r.From%100 == 0 && r.To == r.From+99:
			parts = append(parts, strconv.Itoa(r.From/100)+"xx")
		default:
			parts = append(parts, strconv.Itoa(r.From)+"-"+strconv.Itoa(r.To))
		}
	}
	return strings.Join(parts, ",")
}

// ParseStatusSet reads a comma-separated list of status codes ("429"),
// classes ("5xx") and ranges ("500-504"), e.g. "408,425,429,5xx". Codes must
// lie in 100-599. An empty list is an error: retrying nothing is more likely
// a mistake than a wish.
func ParseStatusSet(s string) (StatusSet, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("status list is empty (example: 408,425,429,5xx)")
	}
	var set StatusSet
	for tok := range strings.SplitSeq(s, ",") {
		tok = strings.TrimSpace(tok)
		r, ok := parseStatusRange(tok)
		if !ok {
			return nil, fmt.Errorf("status %q is not a code (100-599), a class like 5xx or a range like 500-504", tok)
		}
		set = append(set, r)
	}
	return set, nil
}

func parseStatusRange(tok string) (StatusRange, bool) {
	if len(tok) == 3 && strings.EqualFold(tok[1:], "xx") && tok[0] >= '1' && tok[0] <= '5' {
		c := int(tok[0]-'0') * 100
		return StatusRange{c, c + 99}, true
	}
	from, to, isRange := strings.Cut(tok, "-")
	a, ok := parseStatus(strings.TrimSpace(from))
	if !ok {
		return StatusRange{}, false
	}
	if !isRange {
		return StatusRange{a, a}, true
	}
	b, ok := parseStatus(strings.TrimSpace(to))
	if !ok || b < a {
		return StatusRange{}, false
	}
	return StatusRange{a, b}, true
}

func parseStatus(s string) (int, bool) {
	if len(s) != 3 {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 599 {
		return 0, false
	}
	return n, true
}

const maxDuration = time.Duration(1<<63 - 1)

// ParseRetryAfter reads a Retry-After value: delta-seconds ("120") or an
// HTTP-date in any of the three formats http.ParseTime accepts. ok is false
// when v is neither. A negative delay or a date in the past yields 0 ("now");
// huge values saturate rather than overflow, and the caller caps them.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isInteger(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil && v[0] == '-', err == nil && n <= 0:
			return 0, true
		case err != nil, n > int64(maxDuration/time.Second):
			// Only a range error is possible here: isInteger checked the syntax.
			return maxDuration, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true // Sub saturates instead of overflowing
}

// isInteger reports whether s is an optional sign followed by digits. The
// RFC allows only digits; a signed value is read leniently (negative means
// "now") because servers do send them.
func isInteger(s string) bool {
	if s[0] == '-' || s[0] == '+' {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
