package enqueue

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/queue"
)

// Collector reads a batch's results from the results stream (from the
// beginning, so it sees results stored before it started) until every
// expected job has one. Expectations may be added while it runs, as
// publishes are acknowledged.
type Collector struct {
	seed maphash.Seed

	mu       sync.Mutex
	expected map[uint64]bool // job id hash -> result seen
	open     int             // expected without a result yet
	closed   bool            // no more expectations will be added
	changed  chan struct{}

	Summary Summary
	// Out receives each result line once (JSON), if set.
	Out io.Writer
	// OnResult is called for each counted result (progress).
	OnResult func(r *job.Result)
}

// NewCollector returns an empty Collector.
func NewCollector() *Collector {
	return &Collector{seed: maphash.MakeSeed(), expected: map[uint64]bool{}, changed: make(chan struct{}, 1), Summary: newSummary()}
}

// Expect adds a job id whose result must arrive.
func (c *Collector) Expect(id string) {
	h := maphash.String(c.seed, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.expected[h]; !ok {
		c.expected[h] = false
		c.open++
	}
}

// Seal says no more expectations will be added.
func (c *Collector) Seal() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.poke()
}

func (c *Collector) poke() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *Collector) done() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed && c.open == 0
}

// pending holds results that arrived before their job's publish was
// acknowledged (fast targets); they count once Expect catches up.
func (c *Collector) add(r *job.Result, raw []byte) (counted bool) {
	h := maphash.String(c.seed, r.ID)
	c.mu.Lock()
	seen, ok := c.expected[h]
	if ok && seen {
		c.mu.Unlock()
		return false
	}
	if ok {
		c.expected[h] = true
		c.open--
	} else {
		// A result before its Expect: remember it as seen so the later
		// Expect does not wait for it.
		c.expected[h] = true
	}
	c.mu.Unlock()
	c.Summary.Add(r)
	if c.Out != nil {
		_, _ = c.Out.Write(append(raw, '\n'))
	}
	if c.OnResult != nil {
		c.OnResult(r)
	}
	return true
}

// Run consumes the batch's result subject until every expected result has
// arrived (after Seal) or ctx ends.
func (c *Collector) Run(ctx context.Context, js jetstream.JetStream, n Names, batch string) error {
	cons, err := js.OrderedConsumer(ctx, n.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{n.ResultSubject(batch)},
	})
	if err != nil {
		return fmt.Errorf("reading results of batch %s: %w", batch, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("reading results of batch %s: %w", batch, err)
	}
	defer it.Stop()
	msgs := make(chan jetstream.Msg)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := it.Next()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	for !c.done() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.changed:
		case err := <-errc:
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return err
		case m := <-msgs:
			r, err := job.DecodeResult(m.Data())
			if err != nil {
				continue // not ours to judge; downstream tools see it too
			}
			c.add(r, m.Data())
		}
	}
	return nil
}

// Names is the subset of queue naming the collector needs.
type Names = queue.Names

// Summary counts what came back.
type Summary struct {
	mu       sync.Mutex
	Total    int            `json:"total"`
	OK       int            `json:"ok"`
	Failed   int            `json:"failed"`
	ByReason map[string]int `json:"failed_by_reason,omitempty"`
	Attempts int            `json:"attempts"`
	Retries  int            `json:"retries"`
	latency  []int64
	P50MS    int64   `json:"p50_ms"`
	P95MS    int64   `json:"p95_ms"`
	P99MS    int64   `json:"p99_ms"`
	WallMS   int64   `json:"wall_ms"`
	PerSec   float64 `json:"jobs_per_second"`
}

func newSummary() Summary { return Summary{ByReason: map[string]int{}} }

// Add counts one result.
func (s *Summary) Add(r *job.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Total++
	s.Attempts += r.Attempts
	if r.Attempts > 1 {
		s.Retries += r.Attempts - 1
	}
	if r.OK {
		s.OK++
	} else {
		s.Failed++
		reason := r.Reason
		if reason == "" {
			reason = "unknown"
		}
		s.ByReason[reason]++
	}
	s.latency = append(s.latency, r.DurationMS)
}

// Finish computes the percentiles and rates for wall time d.
func (s *Summary) Finish(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sort.Slice(s.latency, func(i, j int) bool { return s.latency[i] < s.latency[j] })
	pct := func(p float64) int64 {
		if len(s.latency) == 0 {
			return 0
		}
		i := int(p*float64(len(s.latency))+0.5) - 1
		return s.latency[min(max(i, 0), len(s.latency)-1)]
	}
	s.P50MS, s.P95MS, s.P99MS = pct(0.50), pct(0.95), pct(0.99)
	s.WallMS = d.Milliseconds()
	if d > 0 {
		s.PerSec = float64(s.Total) / d.Seconds()
	}
}

// String is the human summary.
func (s *Summary) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := fmt.Sprintf("%d results: %d ok, %d failed", s.Total, s.OK, s.Failed)
	if s.Failed > 0 {
		reasons := make([]string, 0, len(s.ByReason))
		for r := range s.ByReason {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		out += " ("
		for i, r := range reasons {
			if i > 0 {
				out += ", "
			}
			out += fmt.Sprintf("%s %d", r, s.ByReason[r])
		}
		out += ")"
	}
	out += fmt.Sprintf("; %d retries; latency p50 %dms p95 %dms p99 %dms; %.1fs, %.1f jobs/s",
		s.Retries, s.P50MS, s.P95MS, s.P99MS, float64(s.WallMS)/1000, s.PerSec)
	return out
}
