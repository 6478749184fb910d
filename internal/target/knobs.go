package target

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// knobs is what one request asks for through its query string, merged over
// the target's options.
type knobs struct {
	latency    time.Duration
	jitter     time.Duration
	status     int // 0: not set
	failFirst  int
	failRate   float64
	failStatus int
	retryAfter string // "": no header
	size       int64  // -1: not set
}

// parseKnobs reads the knobs from q. Unknown parameters are ignored so that
// realistic URLs (?page=2) work; a malformed knob is an error, answered 400,
// because a silently ignored typo would make a demo lie.
func parseKnobs(q url.Values, o *Options) (knobs, error) {
	k := knobs{
		latency:    o.Latency,
		jitter:     o.Jitter,
		failRate:   o.FailRate,
		failStatus: o.FailStatus,
		size:       -1,
	}
	var errs []error
	if v, ok := get(q, "latency"); ok {
		k.latency, errs = parseDuration("latency", v, errs)
	}
	if v, ok := get(q, "jitter"); ok {
		k.jitter, errs = parseDuration("jitter", v, errs)
	}
	if v, ok := get(q, "status"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 200 || n > 599 {
			errs = append(errs, fmt.Errorf("status=%q: want an HTTP status in 200-599", v))
		}
		k.status = n
	}
	if v, ok := get(q, "fail_first"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("fail_first=%q: want a count >= 0", v))
		}
		k.failFirst = n
	}
	if v, ok := get(q, "fail_rate"); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
			errs = append(errs, fmt.Errorf("fail_rate=%q: want a probability in [0, 1]", v))
		}
		k.failRate = f
	}
	if v, ok := get(q, "fail_status"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || !validFailStatus(n) {
			errs = append(errs, fmt.Errorf("fail_status=%q: want an HTTP status in 400-599", v))
		}
		k.failStatus = n
	}
	if v, ok := get(q, "retry_after"); ok {
		// Seconds or an HTTP-date, the two forms RFC 9110 allows, so the
		// sender's parsing of both can be exercised.
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			k.retryAfter = strconv.Itoa(n)
		} else if _, err := http.ParseTime(v); err == nil {
			k.retryAfter = v
		} else {
			errs = append(errs, fmt.Errorf("retry_after=%q: want seconds >= 0 or an HTTP-date", v))
		}
	}
	if v, ok := get(q, "size"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > MaxSize {
			errs = append(errs, fmt.Errorf("size=%q: want a byte count in [0, %d]", v, MaxSize))
		}
		k.size = n
	}
	return k, errors.Join(errs...)
}

func get(q url.Values, name string) (string, bool) {
	vs, ok := q[name]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

func parseDuration(name, v string, errs []error) (time.Duration, []error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > MaxLatency {
		return 0, append(errs, fmt.Errorf("%s=%q: want a duration like 50ms in [0, %s]", name, v, MaxLatency))
	}
	return d, errs
}
