package enqueue

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/pkg/job"
)

// BreakerLister lists the breakers workers report not closed
// (queue.BreakerBoard).
type BreakerLister interface {
	List(ctx context.Context) ([]queue.BreakerEntry, error)
}

// BreakerWatch follows the workers' breaker board while a batch runs, so
// that progress and the summary can say which hosts are cut off: jobs
// waiting on an open breaker are otherwise just slow. It reads the board
// every few seconds; a breaker open for less than that may go unseen.
type BreakerWatch struct {
	src   BreakerLister
	every time.Duration

	mu   sync.Mutex
	now  []queue.BreakerEntry          // at the last read, one per host
	seen map[string]queue.BreakerEntry // every host seen not closed, first report
}

// NewBreakerWatch returns a watch that reads src every interval.
func NewBreakerWatch(src BreakerLister, every time.Duration) *BreakerWatch {
	return &BreakerWatch{src: src, every: every, seen: map[string]queue.BreakerEntry{}}
}

// Run reads the board until ctx ends. A failed read keeps the last state:
// the board is informational and must not fail a batch.
func (w *BreakerWatch) Run(ctx context.Context) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		_ = w.Poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll reads the board once; a nil watch reads nothing.
func (w *BreakerWatch) Poll(ctx context.Context) error {
	if w == nil {
		return nil
	}
	entries, err := w.src.List(ctx)
	if err != nil {
		return err
	}
	byHost := perHost(entries)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now = byHost
	for _, e := range byHost {
		if _, ok := w.seen[e.Host]; !ok {
			w.seen[e.Host] = e
		}
	}
	return nil
}

// perHost merges the workers' reports of each host: open if any worker's
// breaker is open, since the earliest report.
func perHost(entries []queue.BreakerEntry) []queue.BreakerEntry {
	m := map[string]queue.BreakerEntry{}
	for _, e := range entries {
		cur, ok := m[e.Host]
		if !ok {
			m[e.Host] = e
			continue
		}
		if e.State == job.BreakerOpen {
			cur.State = job.BreakerOpen
		}
		if e.Since.Before(cur.Since) {
			cur.Since = e.Since
		}
		m[e.Host] = cur
	}
	out := make([]queue.BreakerEntry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// Line says which breakers are not closed now, e.g. "breaker open:
// api.example.com:443 (since 10:17:03)"; "" when all are closed.
func (w *BreakerWatch) Line() string {
	if w == nil {
		return ""
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var open, half []string
	for _, e := range w.now {
		s := fmt.Sprintf("%s (since %s)", termsafe.String(e.Host), e.Since.Format(time.TimeOnly))
		if e.State == job.BreakerOpen {
			open = append(open, s)
		} else {
			half = append(half, s)
		}
	}
	var parts []string
	if len(open) > 0 {
		parts = append(parts, "breaker open: "+listed(open))
	}
	if len(half) > 0 {
		parts = append(parts, "breaker half-open: "+listed(half))
	}
	return strings.Join(parts, "; ")
}

// SeenBreaker is a host whose breaker was seen not closed during a run.
type SeenBreaker struct {
	queue.BreakerEntry
	// Still says it was not closed at the last read.
	Still bool `json:"still_not_closed"`
}

// Seen lists, by host, every breaker seen not closed during the run, as
// first seen.
func (w *BreakerWatch) Seen() []SeenBreaker {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	still := map[string]bool{}
	for _, e := range w.now {
		still[e.Host] = true
	}
	out := make([]SeenBreaker, 0, len(w.seen))
	for h, e := range w.seen {
		out = append(out, SeenBreaker{BreakerEntry: e, Still: still[h]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// Summary names every host whose breaker was seen not closed during the
// run, and whether it still is; "" if none was.
func (w *BreakerWatch) Summary() string {
	seen := w.Seen()
	if len(seen) == 0 {
		return ""
	}
	items := make([]string, len(seen))
	for i, e := range seen {
		end := "closed now"
		if e.Still {
			end = "still not closed"
		}
		items[i] = fmt.Sprintf("%s (%s since %s, %s)", termsafe.String(e.Host), termsafe.String(string(e.State)), e.Since.Format(time.TimeOnly), end)
	}
	return "breakers opened during the run: " + listed(items) +
		"; jobs turned away by an open breaker spend tries and fail with reason breaker_open"
}

// listed joins at most a few items, counting the rest.
func listed(items []string) string {
	const most = 3
	if len(items) <= most {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:most], ", ") + fmt.Sprintf(" and %d more", len(items)-most)
}
