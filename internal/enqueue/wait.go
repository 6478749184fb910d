package enqueue

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/pkg/job"
)

// Collector gathers one result per expected job: from the batch's result
// subject (read from the beginning, so it sees results stored before it
// started) and, for jobs completed by an earlier run, from wherever their
// results were stored. Expectations may be added while it runs; once
// sealed, results of jobs it does not expect are ignored (a batch id given
// again may hold results of other files).
type Collector struct {
	seed maphash.Seed

	mu      sync.Mutex
	set     idSet
	open    int  // expected without a result yet
	sealed  bool // no more expectations will be added
	changed chan struct{}

	outMu sync.Mutex
	// sources are this run's sources (FILE:LINE) of the jobs whose results
	// come from another run, which stored its own lines: a file enqueued
	// again with lines added must still join its results to its lines.
	sources map[uint64]string

	// After, if set, is a results stream sequence stored before this run
	// began: the batch's subject is read from the next one on. A batch id
	// used again holds results of earlier runs, superseded ones among them;
	// those this run needs are found through their completion markers.
	After uint64

	Summary Summary
	// Out receives each counted result once (JSON Lines), if set.
	Out io.Writer
	// OnResult, if set, is called with each counted result, decoded in
	// full.
	OnResult func(r *job.Result)
	// OnOutcome, if set, is called with each counted result's outcome
	// (progress); it needs no full decode.
	OnOutcome func(ok bool, reason string)
}

// NewCollector returns an empty Collector.
func NewCollector() *Collector {
	return &Collector{seed: maphash.MakeSeed(), changed: make(chan struct{}, 1), Summary: newSummary()}
}

func (c *Collector) hash(id string) uint64 { return maphash.String(c.seed, id) }

// Key is how the collector keys a job id; PublishOptions.Key takes it.
func (c *Collector) Key(id string) uint64 { return c.hash(id) }

// Reserve sizes the collector for n expected jobs in all, so that its
// memory is allocated once (about 10 bytes a job).
func (c *Collector) Reserve(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.set.reserve(n)
	c.Summary.reserve(n)
}

// Expect adds a job id whose result must arrive. A result that came before
// its Expect is already counted.
func (c *Collector) Expect(id string) {
	h := c.hash(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.set.get(h); !ok {
		c.set.set(h, statePending)
		c.open++
	}
}

// Seal says no more expectations will be added.
func (c *Collector) Seal() {
	c.mu.Lock()
	c.sealed = true
	c.mu.Unlock()
	c.poke()
}

// Unpublished says an expected job was finally refused by the broker: no
// result will come for it.
func (c *Collector) Unpublished(id string) { c.drop(c.hash(id), stateUnpublished) }

// dropMissing says a job was completed by an earlier run but its result is
// no longer stored.
func (c *Collector) dropMissing(h uint64) { c.drop(h, stateMissing) }

func (c *Collector) drop(h, st uint64) {
	c.mu.Lock()
	if cur, ok := c.set.get(h); ok && (cur == statePending || cur == stateCompletedEarlier) {
		c.set.set(h, st)
		c.open--
		if st == stateMissing {
			c.Summary.addMissing(1)
		}
	}
	c.mu.Unlock()
	c.poke()
}

// resolved reports whether a job's result has been counted (or will never
// come).
func (c *Collector) resolved(h uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.set.get(h)
	return ok && st != statePending && st != stateCompletedEarlier
}

// expectCompletedEarlier says a job's result is to be read from where an earlier
// run stored it, so that it needs no bookkeeping of its own: what is still
// in that state once those results are read is missing (dropCompletedEarlier).
func (c *Collector) expectCompletedEarlier(h uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.set.get(h); ok && st == statePending {
		c.set.set(h, stateCompletedEarlier)
	}
}

// expectElsewhere takes from the publish report what it says of the jobs
// whose results do not come on the batch's subject: those refused by the
// broker have none; those completed by an earlier run are read where it
// stored them; those and the ones another run enqueued are given this
// run's sources (the report's map is handed over, not copied).
func (c *Collector) expectElsewhere(rep *PublishReport) {
	for _, pe := range rep.Failed {
		c.Unpublished(pe.ID)
	}
	for h := range rep.completed {
		c.expectCompletedEarlier(h)
	}
	c.mu.Lock()
	c.sources, rep.completed = rep.completed, nil
	if c.sources == nil {
		c.sources = map[uint64]string{}
	}
	for _, d := range rep.dups {
		c.sources[d.h] = d.source
	}
	c.mu.Unlock()
}

// withSource returns raw with the source this run gave job h, if another
// run stored it with another.
func (c *Collector) withSource(h uint64, raw []byte) []byte {
	c.mu.Lock()
	src := c.sources[h]
	c.mu.Unlock()
	if src == "" {
		return raw
	}
	r, err := job.DecodeResult(raw)
	if err != nil || r.Source == src {
		return raw
	}
	r.Source = src
	if b, err := job.EncodeResult(r); err == nil {
		return b
	}
	return raw
}

// dropCompletedEarlier counts as missing every job whose earlier result was not
// found.
func (c *Collector) dropCompletedEarlier() {
	c.mu.Lock()
	n := c.set.replaceAll(stateCompletedEarlier, stateMissing)
	c.open -= n
	c.mu.Unlock()
	if n > 0 {
		c.Summary.addMissing(n)
	}
	c.poke()
}

func (c *Collector) poke() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Done reports whether every expected job has its result (after Seal).
func (c *Collector) Done() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sealed && c.open == 0
}

// Where a counted result comes from.
type source int

const (
	fromSubject          source = iota // the batch's own result subject
	fromMarker                         // found through a completion marker (another run)
	fromCompletedEarlier               // an earlier run's batch, read for the jobs completed by an earlier run
)

// add counts one result, once per job. Results read from an earlier run's
// batch count only for the jobs completed by an earlier run: that batch may hold
// results of other jobs of this run (sent again after their markers
// expired), which must wait for their new result.
func (c *Collector) add(r *counted, raw []byte, src source) bool {
	h := c.hash(r.ID)
	c.mu.Lock()
	st, ok := c.set.get(h)
	switch {
	case !ok && c.sealed:
		c.mu.Unlock()
		return false // not a job of this run
	case src == fromCompletedEarlier && st != stateCompletedEarlier && st != stateMissing:
		c.mu.Unlock()
		return false
	case !ok:
		// Before its Expect: count it now, so the Expect does not wait.
		c.set.set(h, stateCounted)
	case st == stateCounted:
		c.mu.Unlock()
		return false
	case st == statePending || st == stateCompletedEarlier:
		c.set.set(h, stateCounted)
		c.open--
	case st == stateMissing:
		// It turned up after all.
		c.set.set(h, stateCounted)
		c.Summary.addMissing(-1)
	default: // reported unpublished, yet stored
		c.set.set(h, stateCounted)
	}
	c.mu.Unlock()
	c.Summary.add(r, src != fromSubject)
	if src != fromSubject {
		raw = c.withSource(h, raw)
	}
	if c.Out != nil {
		c.outMu.Lock()
		_, _ = c.Out.Write(append(termsafe.JSON(raw), '\n'))
		c.outMu.Unlock()
	}
	if c.OnOutcome != nil {
		c.OnOutcome(r.OK, r.Reason)
	}
	if c.OnResult != nil {
		if full, err := job.DecodeResult(raw); err == nil {
			c.OnResult(full)
		}
	}
	c.poke()
	return true
}

// counted is what the collector reads of a result record: the summary's
// fields, not the body (up to the response size limit) nor the times.
type counted struct {
	ID         string `json:"id"`
	OK         bool   `json:"ok"`
	Attempts   int    `json:"attempts"`
	Reason     string `json:"reason"`
	DurationMS int64  `json:"duration_ms"`
	Callback   *struct {
		OK bool `json:"ok"`
	} `json:"callback"`
}

func decodeCounted(raw []byte) (*counted, error) {
	var r counted
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	if r.ID == "" {
		return nil, errors.New("result record without an id")
	}
	return &r, nil
}

// addStored counts a result record read from the results stream outside
// the batch's subject.
func (c *Collector) addStored(raw []byte, src source) {
	r, err := decodeCounted(raw)
	if err != nil {
		return // a record that does not decode leaves its job waiting or missing
	}
	c.add(r, raw, src)
}

// Collect feeds the collector from its one flow: the batch's result subject
// from the start (so it may begin before publishing), then the report that
// publishing sends on published, which says which jobs have their results
// elsewhere (completed by an earlier run, enqueued by another run; read
// through done, unless looking markers up failed) and which have none. It
// returns once every expected job has its result or is known to have none,
// or ctx ends; published closed without a report ends it with an error.
func (c *Collector) Collect(ctx context.Context, js jetstream.JetStream, n Names, batch string, done *queue.DoneIndex, published <-chan *PublishReport) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	subject := make(chan error, 1)
	go func() { subject <- c.Run(wctx, js, n, batch) }()
	var rep *PublishReport
	select {
	case rep = <-published:
	case <-ctx.Done():
	}
	if rep == nil {
		cancel()
		<-subject
		return cmp.Or(ctx.Err(), errors.New("publishing ended without a report"))
	}
	if rep.LookupErr != nil {
		done = nil
	}
	c.expectElsewhere(rep)
	elsewhere := make(chan error, 1)
	go func() { elsewhere <- rep.collectElsewhere(wctx, js, n, done, c) }()
	var err error
	select {
	case err = <-subject:
		cancel()
		if eerr := <-elsewhere; err == nil && !errors.Is(eerr, context.Canceled) {
			err = eerr
		}
	case err = <-elsewhere:
		if err != nil {
			cancel()
			<-subject
		} else {
			err = <-subject
		}
	}
	return err
}

// Run consumes the batch's result subject until every expected result has
// arrived (after Seal) or ctx ends.
func (c *Collector) Run(ctx context.Context, js jetstream.JetStream, n Names, batch string) error {
	if c.Done() {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{n.ResultSubject(batch)}}
	if c.After > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, c.After+1
	}
	cons, err := js.OrderedConsumer(ctx, n.ResultsStream(), cfg)
	if err != nil {
		return fmt.Errorf("reading results of batch %s: %w", batch, err)
	}
	// Short heartbeats: when the node serving this consumer is lost, the
	// ordered consumer notices after two missed ones and resumes elsewhere.
	it, err := cons.Messages(jetstream.PullHeartbeat(time.Second), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return fmt.Errorf("reading results of batch %s: %w", batch, err)
	}
	msgs := make(chan jetstream.Msg)
	errc := make(chan error, 1)
	rctx, cancel := context.WithCancel(ctx)
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		for {
			m, err := it.Next()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-rctx.Done():
				return
			}
		}
	}()
	defer func() {
		cancel()
		it.Stop()
		reader.Wait()
	}()
	for !c.Done() {
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
			r, err := decodeCounted(m.Data())
			if err != nil {
				continue // not ours to judge; downstream tools see it too
			}
			c.add(r, m.Data(), fromSubject)
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
	// Cancelled counts jobs ended by `enqueue cancel` before they were
	// sent (reason cancelled): neither ok nor failed.
	Cancelled int `json:"cancelled"`
	// Priority and Weight are the batch's (set by Run).
	Priority string `json:"priority,omitempty"`
	Weight   int    `json:"weight,omitempty"`
	// CompletedEarlier counts results of jobs completed by an earlier run, returned
	// instead of sending the jobs again.
	CompletedEarlier int `json:"from_earlier_runs"`
	// EarlierRuns says which earlier batches completed them, and when
	// (set from the publish report).
	EarlierRuns []EarlierRun `json:"earlier_runs,omitempty"`
	// SentAgain counts jobs an earlier run failed without sending anything,
	// sent again by this run.
	SentAgain int `json:"sent_again,omitempty"`
	// Missing counts jobs completed by an earlier run whose result is no
	// longer stored (expired or purged): their outcome is unknown.
	Missing int `json:"missing,omitempty"`
	// CallbacksFailed counts jobs whose callback finally failed: the job's
	// outcome stands, the callback has a dead letter of its own.
	CallbacksFailed int     `json:"callbacks_failed,omitempty"`
	Attempts        int     `json:"attempts"`
	Retries         int     `json:"retries"`
	latency         []int32 // of the last attempt, ms
	P50MS           int64   `json:"p50_ms"`
	P95MS           int64   `json:"p95_ms"`
	P99MS           int64   `json:"p99_ms"`
	WallMS          int64   `json:"wall_ms"`
	PerSec          float64 `json:"jobs_per_second"`
	// Breakers are those the workers reported open during the run (set by
	// Run); BreakerLine says so for people.
	Breakers    []SeenBreaker `json:"breakers_opened,omitempty"`
	breakerLine string
}

// BreakerLine is the human line about the breakers opened, "" if none.
func (s *Summary) BreakerLine() string { return s.breakerLine }

func newSummary() Summary { return Summary{ByReason: map[string]int{}} }

func (s *Summary) reserve(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cap(s.latency) < n {
		s.latency = slices.Grow(s.latency, n-len(s.latency))
	}
}

// Add counts one result; earlier says it came from an earlier run.
func (s *Summary) Add(r *job.Result, earlier bool) {
	c := &counted{ID: r.ID, OK: r.OK, Attempts: r.Attempts, Reason: string(r.Reason), DurationMS: r.DurationMS}
	if r.Callback != nil {
		c.Callback = &struct {
			OK bool `json:"ok"`
		}{r.Callback.OK}
	}
	s.add(c, earlier)
}

func (s *Summary) add(r *counted, earlier bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Total++
	if earlier {
		s.CompletedEarlier++
	}
	s.Attempts += r.Attempts
	if r.Attempts > 1 {
		s.Retries += r.Attempts - 1
	}
	switch {
	case r.OK:
		s.OK++
	case r.Reason == string(job.ReasonCancelled):
		s.Cancelled++
	default:
		s.Failed++
		reason := string(r.Reason)
		if reason == "" {
			reason = "unknown"
		}
		s.ByReason[reason]++
	}
	if r.Callback != nil && !r.Callback.OK {
		s.CallbacksFailed++
	}
	// A job that sent nothing (turned away, refused, expired) has no
	// latency: a 0 would pull the percentiles down.
	if r.Attempts > 0 {
		s.latency = append(s.latency, int32(min(max(r.DurationMS, 0), 1<<31-1)))
	}
}

func (s *Summary) addMissing(d int) {
	s.mu.Lock()
	s.Missing += d
	s.mu.Unlock()
}

// Finish computes the percentiles and rates for wall time d.
func (s *Summary) Finish(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	slices.Sort(s.latency)
	pct := func(p float64) int64 {
		if len(s.latency) == 0 {
			return 0
		}
		// Nearest rank.
		i := int(p*float64(len(s.latency))+0.5) - 1
		return int64(s.latency[min(max(i, 0), len(s.latency)-1)])
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
	var b strings.Builder
	fmt.Fprintf(&b, "%d results: %d ok, %d failed", s.Total, s.OK, s.Failed)
	if s.Failed > 0 {
		reasons := make([]string, 0, len(s.ByReason))
		for r := range s.ByReason {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		b.WriteString(" (")
		for i, r := range reasons {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %d", termsafe.String(r), s.ByReason[r])
		}
		b.WriteString(")")
	}
	if s.Cancelled > 0 {
		fmt.Fprintf(&b, ", %d cancelled (never sent: `enqueue cancel`)", s.Cancelled)
	}
	if s.CompletedEarlier > 0 {
		fmt.Fprintf(&b, "; %d completed by an earlier run", s.CompletedEarlier)
	}
	if s.SentAgain > 0 {
		fmt.Fprintf(&b, "; %d sent again (their earlier run sent nothing)", s.SentAgain)
	}
	if s.Missing > 0 {
		fmt.Fprintf(&b, "; %d completed by an earlier run with results no longer stored", s.Missing)
	}
	if s.CallbacksFailed > 0 {
		fmt.Fprintf(&b, "; %d callbacks failed (dead-lettered; enqueue redrive re-sends them)", s.CallbacksFailed)
	}
	fmt.Fprintf(&b, "; %d retries; latency p50 %dms p95 %dms p99 %dms; %.1fs, %.1f jobs/s",
		s.Retries, s.P50MS, s.P95MS, s.P99MS, float64(s.WallMS)/1000, s.PerSec)
	if s.Weight != 0 && s.Weight != queue.WeightNormal {
		fmt.Fprintf(&b, "; priority %s", s.Priority)
	}
	return b.String()
}
