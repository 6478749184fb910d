package target

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// maxKeyStatuses bounds the status history kept per key. A job sees a
// handful of attempts; the bound only matters for a runaway client, whose
// Requests count keeps growing anyway.
const maxKeyStatuses = 100

// Stats is a snapshot of what a Target has seen since it was created or last
// reset.
type Stats struct {
	// Requests counts every request other than /stats and /reset, from the
	// moment it arrives (including those still in flight).
	Requests int64 `json:"requests"`
	// InFlight is the number of requests being handled now; MaxInFlight the
	// highest it has been. A request is in flight from its arrival until its
	// answer starts to leave (or its client gives up), so a client that never
	// has more than N requests outstanding is never measured above N.
	InFlight    int64 `json:"in_flight"`
	MaxInFlight int64 `json:"max_in_flight"`
	// Duplicates counts requests whose key had already been answered 2xx by
	// the time this request finished: repeats of a delivered job, which an
	// at-least-once sender keeps rare. Two overlapping sends that both
	// succeed count one duplicate.
	Duplicates int64 `json:"duplicates"`
	// Canceled counts requests whose client gave up before the answer.
	Canceled int64 `json:"canceled"`
	// ReceivedBytes sums the request bodies read.
	ReceivedBytes int64 `json:"received_bytes"`
	// ByStatus counts answers by HTTP status.
	ByStatus map[int]int64 `json:"by_status"`
	// DistinctKeys is the number of idempotency keys seen (Target.Keys has
	// their state).
	DistinctKeys int `json:"distinct_keys"`
}

// KeyStats is what one idempotency key (one job) saw.
type KeyStats struct {
	Requests int `json:"requests"`
	// Statuses are the answers in the order they were given (at most the
	// first 100); 0 stands for a request whose client gave up first.
	Statuses   []int `json:"statuses"`
	Successes  int   `json:"successes"`  // 2xx answers
	Duplicates int   `json:"duplicates"` // requests finished after a 2xx
}

type keyState struct {
	requests   int
	statuses   []int
	successes  int
	duplicates int
}

func (k *keyState) snapshot() KeyStats {
	return KeyStats{
		Requests:   k.requests,
		Statuses:   slices.Clone(k.statuses),
		Successes:  k.successes,
		Duplicates: k.duplicates,
	}
}

// period holds everything Reset starts over. Counters are atomics so the hot
// path of an unkeyed request takes no lock; per-key state needs a map and a
// mutex, which is fine next to an HTTP round trip.
type period struct {
	requests      atomic.Int64
	maxInFlight   atomic.Int64
	duplicates    atomic.Int64
	canceled      atomic.Int64
	receivedBytes atomic.Int64
	byStatus      [600]atomic.Int64 // index = HTTP status (100-599)

	mu       sync.Mutex
	keys     map[string]*keyState
	unkeyed  map[string]int // fail_first counters by "METHOD request-URI"
	arrivals []time.Time    // Options.RecordArrivals
}

func (p *period) noteArrival(at time.Time) {
	p.mu.Lock()
	p.arrivals = append(p.arrivals, at)
	p.mu.Unlock()
}

func newPeriod(inFlight int64) *period {
	p := &period{keys: make(map[string]*keyState), unkeyed: make(map[string]int)}
	p.maxInFlight.Store(inFlight)
	return p
}

// noteInFlight raises the high-water mark to n if it is higher; a CAS loop
// keeps it exact without a lock.
func (p *period) noteInFlight(n int64) {
	for {
		cur := p.maxInFlight.Load()
		if n <= cur || p.maxInFlight.CompareAndSwap(cur, n) {
			return
		}
	}
}

func (p *period) countStatus(status int) {
	if status >= 0 && status < len(p.byStatus) {
		p.byStatus[status].Add(1)
	}
}

// enterKey counts a keyed request on arrival and returns its number among
// the key's requests (1-based), which fail_first compares against.
func (p *period) enterKey(key string) (*keyState, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ks := p.keys[key]
	if ks == nil {
		ks = &keyState{}
		p.keys[key] = ks
	}
	ks.requests++
	return ks, ks.requests
}

func (p *period) enterUnkeyed(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unkeyed[id]++
	return p.unkeyed[id]
}

// finishKey records a keyed request's answer (0: the client gave up). The
// duplicate check happens here, at the end, so a send that overlapped the
// successful one is caught too.
func (p *period) finishKey(ks *keyState, status int) {
	if ks == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ks.successes > 0 {
		ks.duplicates++
		p.duplicates.Add(1)
	}
	if len(ks.statuses) < maxKeyStatuses {
		ks.statuses = append(ks.statuses, status)
	}
	if status >= 200 && status < 300 {
		ks.successes++
	}
}

// Stats returns a snapshot of the counters of the current period.
func (t *Target) Stats() Stats {
	p := t.cur.Load()
	s := Stats{
		Requests:      p.requests.Load(),
		InFlight:      t.inFlight.Load(),
		MaxInFlight:   p.maxInFlight.Load(),
		Duplicates:    p.duplicates.Load(),
		Canceled:      p.canceled.Load(),
		ReceivedBytes: p.receivedBytes.Load(),
		ByStatus:      make(map[int]int64),
	}
	for code := range p.byStatus {
		if n := p.byStatus[code].Load(); n > 0 {
			s.ByStatus[code] = n
		}
	}
	p.mu.Lock()
	s.DistinctKeys = len(p.keys)
	p.mu.Unlock()
	return s
}

// Arrivals returns when each request of this counting period arrived, in
// order, if Options.RecordArrivals was on when it came.
func (t *Target) Arrivals() []time.Time {
	p := t.cur.Load()
	p.mu.Lock()
	out := slices.Clone(p.arrivals)
	p.mu.Unlock()
	slices.SortFunc(out, time.Time.Compare)
	return out
}

// Key returns what the request with the given idempotency key saw; the zero
// KeyStats if the key has not been seen.
func (t *Target) Key(id string) KeyStats {
	p := t.cur.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	if ks := p.keys[id]; ks != nil {
		return ks.snapshot()
	}
	return KeyStats{}
}

// Keys returns a copy of the per-key state of every key seen.
func (t *Target) Keys() map[string]KeyStats {
	p := t.cur.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]KeyStats, len(p.keys))
	for id, ks := range p.keys {
		out[id] = ks.snapshot()
	}
	return out
}
