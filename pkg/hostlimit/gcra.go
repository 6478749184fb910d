package hostlimit

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Buckets holds the state of the rate limits. For a fleet-wide limit every
// worker process must share it (internal/fleetrate keeps it in a NATS
// JetStream key-value bucket); MemBuckets serves one process.
type Buckets interface {
	// Update sets key to fn(current value), atomically: if the value
	// changed under it, fn runs again on the new one. cur is nil when the
	// key has no value; fn returning nil leaves the value as it is. fn is
	// cheap and has no side effects, so it may run several times.
	//
	// An implementation may first offer fn a cached value: a write is only
	// ever made from the current one, but a decision not to write may rest
	// on an older one. The rate state only moves forward, so an older
	// value never shows more room than there is.
	Update(ctx context.Context, key string, fn func(cur []byte) ([]byte, error)) error
}

// MemBuckets is Buckets for a single process. The zero value is ready.
type MemBuckets struct {
	mu sync.Mutex
	m  map[string][]byte
}

// Update implements Buckets.
func (b *MemBuckets) Update(_ context.Context, key string, fn func([]byte) ([]byte, error)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	next, err := fn(b.m[key])
	if err != nil || next == nil {
		return err
	}
	if b.m == nil {
		b.m = map[string][]byte{}
	}
	b.m[key] = next
	return nil
}

// The shared state of a rate limit is one number: the GCRA "theoretical
// arrival time" (TAT), the instant at which the bucket would be full again
// if nothing more were taken, in Unix nanoseconds. Taking n tokens moves it
// n intervals later; a grant is allowed while the TAT stays within one
// burst of now. Every process applies the same rule to the same number with
// a compare-and-swap, so the combined rate of the fleet is bounded no
// matter how many processes share it, and a process that dies holds no
// state anyone has to clean up.
//
// Clocks: each process uses its own wall clock. A clock that runs ahead by
// d can take at most d's worth of tokens early, once; one that runs behind
// gets fewer. Keep the fleet's clocks synchronised (NTP) and the error is
// negligible.

// grant takes up to want tokens at now from the bucket whose TAT is tat
// (0: a fresh, full bucket). It returns the new TAT and how many tokens
// were granted; with none, wait is how long until one is available.
func grant(tat, now int64, r Rate, want int) (newTAT int64, n int, wait time.Duration) {
	interval := int64(r.Interval())
	tau := int64(r.span())
	t0 := max(tat, now)
	avail := (now + tau - t0) / interval
	if avail < 1 {
		return tat, 0, time.Duration(t0 + interval - tau - now)
	}
	n = int(min(int64(want), avail))
	return t0 + int64(n)*interval, n, 0
}

func parseTAT(b []byte) int64 {
	if b == nil {
		return 0
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		// A value we cannot read (another version, a manual edit) is
		// treated as a full bucket rather than a stuck one.
		return 0
	}
	return v
}

func formatTAT(v int64) []byte { return strconv.AppendInt(nil, v, 10) }

// hostKey and batchKey name the shared state of a host's limit and of a
// batch's limit on a host. Key characters are restricted (JetStream KV
// allows [-/_=.A-Za-z0-9], no empty dot-separated token), so everything
// outside [a-z0-9-] is escaped as =XX, dots included.
func hostKey(host string) string { return "h." + escapeKey(host) }

// parkKey names the shared schedule of the jobs a limit refused.
func parkKey(key string) string { return key + ".park" }

func batchKey(batch, host string) string { return "b." + escapeKey(batch) + "." + escapeKey(host) }

func escapeKey(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
