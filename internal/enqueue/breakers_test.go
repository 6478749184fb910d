package enqueue_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
)

// Progress and the summary name the breakers the workers report open, one
// line per host whatever the number of workers, from the real board.
func TestBreakerWatchShowsOpenBreakers(t *testing.T) {
	ns := natstest.RunServer(t)
	nc, js := connect(t, ns)
	defer nc.Close()
	ctx := context.Background()
	board, err := queue.OpenBreakerBoard(ctx, js, names, 0)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 1, 1, 10, 17, 3, 0, time.UTC)
	for _, e := range []queue.BreakerEntry{
		{Host: "api.example.com:443", Worker: "w2", State: "half-open", Since: since.Add(time.Minute)},
		{Host: "api.example.com:443", Worker: "w1", State: "open", Since: since},
		{Host: "b.example.com:443", Worker: "w1", State: "half-open", Since: since},
	} {
		if err := board.Report(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	w := enqueue.NewBreakerWatch(board, time.Hour)
	var out bytes.Buffer
	p := enqueue.NewProgress(&out, enqueue.ProgressLines, 10, true)
	p.ShowBreakers(w)
	if s := p.Status(); strings.Contains(s, "breaker") {
		t.Errorf("status before any read: %q", s)
	}
	if err := w.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	want := "breaker open: api.example.com:443 (since 10:17:03); breaker half-open: b.example.com:443 (since 10:17:03)"
	if s := p.Status(); !strings.HasSuffix(s, "; "+want) {
		t.Errorf("status %q, want it to end with %q", s, want)
	}

	// Closed on every worker: gone from progress, still in the summary.
	for _, wk := range []string{"w1", "w2"} {
		if err := board.Report(ctx, queue.BreakerEntry{Host: "api.example.com:443", Worker: wk, State: "closed"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if l := w.Line(); l != "breaker half-open: b.example.com:443 (since 10:17:03)" {
		t.Errorf("line %q", l)
	}
	sum := w.Summary()
	for _, s := range []string{"api.example.com:443 (open since 10:17:03, closed now)", "b.example.com:443 (half-open since 10:17:03, still not closed)", "breaker_open"} {
		if !strings.Contains(sum, s) {
			t.Errorf("summary %q lacks %q", sum, s)
		}
	}
	seen := w.Seen()
	if len(seen) != 2 || seen[0].Host != "api.example.com:443" || seen[0].Still || !seen[0].Since.Equal(since) || !seen[1].Still {
		t.Errorf("seen %+v", seen)
	}
	if s := enqueue.NewBreakerWatch(board, time.Hour).Summary(); s != "" {
		t.Errorf("summary of a watch that saw nothing: %q", s)
	}
}
