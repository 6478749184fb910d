package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// arrival is one request as the target saw it: the batch named by the
// first element of its path, and when it came.
type arrival struct {
	batch string
	at    time.Time
}

// requestOrder records, in order, every request a target sees; the order is
// what the fairness tests assert on, since a loaded machine stretches time
// but cannot reorder what one target saw.
type requestOrder struct {
	mu   sync.Mutex
	seq  []arrival
	poke chan struct{}
}

func newRequestOrder() *requestOrder { return &requestOrder{poke: make(chan struct{}, 1)} }

// record is a target.Options.OnRequest hook.
func (a *requestOrder) record(r *http.Request) {
	batch, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	a.mu.Lock()
	a.seq = append(a.seq, arrival{batch, time.Now()})
	a.mu.Unlock()
	select {
	case a.poke <- struct{}{}:
	default:
	}
}

func (a *requestOrder) snapshot() []arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]arrival(nil), a.seq...)
}

func (a *requestOrder) count(batch string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, r := range a.seq {
		if r.batch == batch {
			n++
		}
	}
	return n
}

// waitCount blocks until the target saw n requests of batch.
func (a *requestOrder) waitCount(t *testing.T, batch string, n int) {
	t.Helper()
	timeout := time.After(3 * time.Minute) // bounds a broken test only
	for a.count(batch) < n {
		select {
		case <-a.poke:
		case <-timeout:
			t.Fatalf("the target saw %d requests of %s within 3 minutes, want %d", a.count(batch), batch, n)
		}
	}
}

// gate holds a test target's requests while it is shut; its zero value
// is open.
type gate struct {
	mu sync.Mutex
	ch chan struct{} // nil while open
}

// shut makes the requests that arrive from now on wait for open.
func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
}

// open lets every held request go on, and those to come pass.
func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}

// pass is a target.Options.OnRequest hook: it returns once the gate is
// open or r is cancelled.
func (g *gate) pass(r *http.Request) {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-r.Context().Done():
	}
}

// nth is the index in seq of batch's k-th request (from 1), -1 if it has
// fewer.
func nth(seq []arrival, batch string, k int) int {
	for i, r := range seq {
		if r.batch == batch {
			if k--; k == 0 {
				return i
			}
		}
	}
	return -1
}

// span is where batch's requests sit in seq: the index of its first and
// last, and how many there were (-1, -1, 0 if none).
func span(seq []arrival, batch string) (first, last, n int) {
	first, last = -1, -1
	for i, r := range seq {
		if r.batch != batch {
			continue
		}
		if first < 0 {
			first = i
		}
		last = i
		n++
	}
	return first, last, n
}

// countIn counts batch's requests in seq[from:to+1] (none in an empty
// stretch, as when one batch came entirely after another).
func countIn(seq []arrival, batch string, from, to int) int {
	from, to = max(from, 0), min(to, len(seq)-1)
	n := 0
	if to < from {
		return 0
	}
	for _, r := range seq[from : to+1] {
		if r.batch == batch {
			n++
		}
	}
	return n
}

// rateOf is batch's requests per second in seq[from:to+1], from the first
// to the last arrival of any batch in that stretch.
func rateOf(seq []arrival, batch string, from, to int) float64 {
	if from < 0 || to >= len(seq) || to <= from {
		return 0
	}
	d := seq[to].at.Sub(seq[from].at).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(countIn(seq, batch, from, to)) / d
}

// batchJobs writes n GET jobs of batch: ids batch-00000…, each aimed at
// url/batch/items/i, so the target knows which batch a request is of.
func batchJobs(t *testing.T, batch string, n int, url string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), batch+".jsonl")
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"id":"%s-%05d","method":"GET","url":"%s/%s/items/%d"}`+"\n", batch, i, url, batch, i)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
