package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/retry"
)

// BatchStatus is where one batch stands.
type BatchStatus struct {
	Batch string `json:"batch"`
	// Open counts the batch's jobs still on the jobs stream: waiting,
	// deferred for a retry, or in flight.
	Open        uint64 `json:"open"`
	Results     uint64 `json:"results"`      // results stored
	DeadLetters uint64 `json:"dead_letters"` // failed jobs currently in the dead-letter stream
	// State is the batch's (running, paused, cancelled), or "done" for a
	// running batch with no job open.
	State    string `json:"state"`
	Priority string `json:"priority"`
	Weight   int    `json:"weight"`
	// Active: the batch has jobs open or an entry in the batches bucket.
	Active bool `json:"active"`
	// Share is the batch's part of every worker's request places: its
	// weight over the sum of the weights of the running batches with jobs
	// open (0 for the others).
	Share float64 `json:"share"`
	// InFlight counts jobs its consumer handed out and that are not
	// settled yet (requests in flight, and jobs waiting out a retry delay).
	InFlight int `json:"in_flight"`
	// Rate is results stored per second, measured over RateWindow.
	Rate float64 `json:"results_per_second"`
	// Cancelled counts the results of reason cancelled stored since a
	// cancelled batch was cancelled (read for cancelled batches only).
	// CancelledPartial: the overview of every batch stopped reading them
	// at its budget, so Cancelled is a lower bound (status BATCH reads
	// them all).
	Cancelled        *int `json:"cancelled,omitempty"`
	CancelledPartial bool `json:"cancelled_partial,omitempty"`
}

// Overview is the state of the whole system as JetStream sees it.
type Overview struct {
	Batches []BatchStatus `json:"batches"`
	// Lag is the number of jobs no worker has been handed yet (summed over
	// the jobs stream's consumers).
	Lag uint64 `json:"lag"`
	// Unacked counts jobs handed to workers and not yet settled, including
	// those waiting out a retry delay.
	Unacked int `json:"unacked"`
	// PullsWaiting counts workers' pull requests waiting for jobs.
	PullsWaiting int `json:"pulls_waiting"`
	// RateWindowMS is how long the rates were measured over (0: not
	// measured).
	RateWindowMS int64          `json:"rate_window_ms"`
	Breakers     []BreakerEntry `json:"breakers"`
	// Replication is each stream's and bucket's (Replication), when asked.
	Replication []StoreReplication `json:"replication,omitempty"`
	// Warnings are what could not be read, and stores below
	// JETPOST_REPLICAS or with a replica down.
	Warnings []string `json:"warnings,omitempty"`
}

// StatusOptions shape Status.
type StatusOptions struct {
	// RateWindow, if set, measures each batch's rate: the results stream's
	// per-subject counts are read twice, this far apart (one call each,
	// whatever the number of batches).
	RateWindow time.Duration
	// Now and Sleep stand in for the clock (tests drive them).
	Now   func() time.Time
	Sleep func(context.Context, time.Duration) error
}

// Status gathers the overview; batch "" means every batch. What cannot be
// read is a warning in the overview, not an error. Its cost does not grow
// per batch beyond the size of the answers: one stream info per stream,
// one listing of the jobs stream's consumers, one read of the batches
// bucket, and a read of the results of cancelled batches since their
// cancel.
func Status(ctx context.Context, js jetstream.JetStream, n Names, batch string, opts ...StatusOptions) (Overview, error) {
	var o Overview
	var so StatusOptions
	if len(opts) > 0 {
		so = opts[0]
	}
	tok := anyBatch
	if batch != "" {
		tok = batch
	}
	byBatch := map[string]*BatchStatus{}
	get := func(b string) *BatchStatus {
		if s, ok := byBatch[b]; ok {
			return s
		}
		s := &BatchStatus{Batch: b}
		byBatch[b] = s
		return s
	}
	var resultCounts map[string]uint64
	var firstAt time.Time
	for _, src := range []struct {
		stream, subject string
		add             func(*BatchStatus, uint64)
	}{
		{n.JobsStream(), n.JobSubject(tok), func(s *BatchStatus, c uint64) { s.Open += c }},
		{n.ResultsStream(), n.ResultSubject(tok), func(s *BatchStatus, c uint64) { s.Results += c }},
		{n.DLQStream(), n.DLQSubject(tok), func(s *BatchStatus, c uint64) { s.DeadLetters += c }},
	} {
		counts, err := subjectCounts(ctx, js, src.stream, src.subject)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			// A stream offline during an outage must not hide the others.
			o.Warnings = append(o.Warnings, fmt.Sprintf("stream %s: %v; its counts are missing", src.stream, err))
			continue
		}
		if src.stream == n.ResultsStream() {
			resultCounts, firstAt = counts, so.now()
		}
		for subj, c := range counts {
			parts := strings.SplitN(subj, ".", 3)
			if len(parts) == 3 {
				src.add(get(parts[2]), c)
			}
		}
	}
	entries, err := batchEntries(ctx, js, n, batch)
	if err != nil {
		o.Warnings = append(o.Warnings, fmt.Sprintf("batches bucket %s: %v; priorities and states show defaults", n.BatchesBucket(), err))
	}
	for b := range entries {
		get(b)
	}
	if batch != "" {
		get(batch)
	}
	for _, s := range byBatch {
		o.Batches = append(o.Batches, *s)
	}
	sort.Slice(o.Batches, func(i, j int) bool { return o.Batches[i].Batch < o.Batches[j].Batch })
	applyControl(o.Batches, entries)
	o.consumers(ctx, js, n, batch)
	o.rates(ctx, js, n, tok, resultCounts, firstAt, so)
	budget := cancelledBudget
	if batch != "" {
		budget = 0
	}
	o.cancelledCounts(ctx, js, n, entries, budget)
	// The board is auxiliary: without it the batches still show.
	if o.Breakers, err = ReadBreakerBoard(js, n).List(ctx); err != nil {
		o.Warnings = append(o.Warnings, fmt.Sprintf("breaker board %s: %v; open breakers are not shown", n.BreakersBucket(), err))
	}
	return o, nil
}

// subjectCounts is stream's message count per subject matching subject.
func subjectCounts(ctx context.Context, js jetstream.JetStream, stream, subject string) (map[string]uint64, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, err
	}
	return info.State.Subjects, nil
}

// batchEntries reads the batches bucket's entries (batch's alone if set)
// in one pass of the bucket; none if it does not exist yet.
func batchEntries(ctx context.Context, js jetstream.JetStream, n Names, batch string) (map[string]BatchControl, error) {
	out := map[string]BatchControl{}
	b, err := openBatchesReadOnly(ctx, js, n)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return out, err
	}
	if batch != "" {
		c, rev, err := b.Get(ctx, batch)
		if err == nil && rev != 0 {
			out[batch] = c
		}
		return out, err
	}
	w, err := b.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return out, err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // every current value is in
				return out, nil
			}
			out[e.Key()] = decodeBatchControl(e.Key(), e.Value())
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}

// applyControl fills in each batch's state, priority, activity and share.
func applyControl(bs []BatchStatus, entries map[string]BatchControl) {
	total := 0
	for i := range bs {
		s := &bs[i]
		c, ok := entries[s.Batch]
		if !ok {
			c = DefaultBatchControl(s.Batch)
		}
		s.State, s.Priority, s.Weight = string(c.State), PriorityName(c.Weight), c.Weight
		s.Active = ok || s.Open > 0
		if c.State == BatchRunning && s.Open == 0 {
			s.State = "done"
		}
		if c.State == BatchRunning && s.Open > 0 {
			total += c.Weight
		}
	}
	for i := range bs {
		if s := &bs[i]; s.State == string(BatchRunning) && total > 0 {
			s.Share = float64(s.Weight) / float64(total)
		}
	}
}

// PendingJobs reports, for each stream sequence, whether that job message
// is still in the jobs stream (waiting, in progress or waiting for a
// retry): a work queue drops a job once it is acknowledged.
func PendingJobs(ctx context.Context, js jetstream.JetStream, n Names, seqs []uint64) ([]bool, error) {
	st, err := js.Stream(ctx, n.JobsStream())
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(seqs))
	for i, seq := range seqs {
		_, err = st.GetMsg(ctx, seq)
		switch {
		case err == nil:
			out[i] = true
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return nil, err
		}
	}
	return out, nil
}

// consumers reads the jobs stream's consumers (one listing, paged by the
// server) for the lag, in-flight and waiting-pull totals and each batch's
// in-flight count.
func (o *Overview) consumers(ctx context.Context, js jetstream.JetStream, n Names, batch string) {
	st, err := js.Stream(ctx, n.JobsStream())
	if err != nil {
		return // already warned about with the counts
	}
	idx := map[string]int{}
	for i, b := range o.Batches {
		idx[b.Batch] = i
	}
	add := func(ci *jetstream.ConsumerInfo) {
		o.Lag += ci.NumPending
		o.Unacked += ci.NumAckPending
		o.PullsWaiting += ci.NumWaiting
		if b, ok := strings.CutPrefix(ci.Config.FilterSubject, n.JobSubject("")); ok {
			if i, ok := idx[b]; ok {
				o.Batches[i].InFlight += ci.NumAckPending
			}
		}
	}
	if batch != "" {
		c, err := st.Consumer(ctx, n.BatchConsumer(n.JobSubject(batch)))
		if err == nil {
			add(c.CachedInfo())
		}
		return
	}
	lister := st.ListConsumers(ctx)
	for ci := range lister.Info() {
		add(ci)
	}
	if err := lister.Err(); err != nil {
		o.Warnings = append(o.Warnings, fmt.Sprintf("consumers of %s: %v; lag and in-flight counts are incomplete", n.JobsStream(), err))
	}
}

func (so StatusOptions) now() time.Time {
	if so.Now == nil {
		return time.Now()
	}
	return so.Now()
}

// rates measures each batch's results per second: the results stream's
// per-subject counts, read again after so.RateWindow. Only when some batch
// has jobs open: a quiet system answers at once.
func (o *Overview) rates(ctx context.Context, js jetstream.JetStream, n Names, tok string, first map[string]uint64, t0 time.Time, so StatusOptions) {
	open := slices.ContainsFunc(o.Batches, func(b BatchStatus) bool { return b.Open > 0 })
	if so.RateWindow <= 0 || first == nil || !open {
		return
	}
	sleep := so.Sleep
	if sleep == nil {
		sleep = retry.Sleep
	}
	// The window runs from the first read, not from here: reading the
	// bucket and the consumers in between (90 ms with 1,000 batches)
	// would otherwise count as results of a shorter window.
	if sleep(ctx, so.RateWindow-so.now().Sub(t0)) != nil {
		return
	}
	second, err := subjectCounts(ctx, js, n.ResultsStream(), n.ResultSubject(tok))
	elapsed := so.now().Sub(t0)
	if err != nil || elapsed <= 0 {
		return
	}
	o.RateWindowMS = elapsed.Milliseconds()
	for i := range o.Batches {
		b := &o.Batches[i]
		subj := n.ResultSubject(b.Batch)
		if c1, c0 := second[subj], first[subj]; c1 > c0 {
			b.Rate = float64(c1-c0) / elapsed.Seconds()
		}
	}
}

// cancelledLookBack is how long before a batch's cancel its results are
// read for cancelled ones: room for the clocks of enqueue and the server
// to disagree.
const cancelledLookBack = time.Minute

// cancelledBudget bounds how many results of each cancelled batch the
// overview of every batch reads to count the cancelled ones (about a
// second's worth; BENCHMARKS.md): status stays responsive after a
// million-job batch is cancelled.
const cancelledBudget = 100_000

// cancelledCounts counts, for each cancelled batch, its results of reason
// cancelled stored since it was cancelled, reading at most budget results
// of each (0: all).
func (o *Overview) cancelledCounts(ctx context.Context, js jetstream.JetStream, n Names, entries map[string]BatchControl, budget int) {
	for i := range o.Batches {
		b := &o.Batches[i]
		c, ok := entries[b.Batch]
		if !ok || c.State != BatchCancelled || b.Results == 0 {
			continue
		}
		count, complete, err := countCancelled(ctx, js, n, b.Batch, c.Updated.Add(-cancelledLookBack), budget)
		if err != nil {
			o.Warnings = append(o.Warnings, fmt.Sprintf("counting the cancelled results of batch %s: %v", b.Batch, err))
			continue
		}
		b.Cancelled, b.CancelledPartial = &count, !complete
	}
}

// CancelledResults counts batch's results of reason cancelled stored since
// from.
func CancelledResults(ctx context.Context, js jetstream.JetStream, n Names, batch string, from time.Time) (int, error) {
	count, _, err := countCancelled(ctx, js, n, batch, from, 0)
	return count, err
}

// countCancelled is CancelledResults reading at most budget results (0:
// all); complete is false if it stopped there.
func countCancelled(ctx context.Context, js jetstream.JetStream, n Names, batch string, from time.Time, budget int) (count int, complete bool, err error) {
	st, err := js.Stream(ctx, n.ResultsStream())
	if err != nil {
		return 0, false, err
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{n.ResultSubject(batch)},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy, OptStartTime: &from,
	})
	if err != nil {
		return 0, false, err
	}
	read, complete := 0, true
	err = readOrdered(ctx, cons, func(m jetstream.Msg, _ uint64) (bool, error) {
		if isCancelledResult(m.Data()) {
			count++
		}
		if read++; budget > 0 && read >= budget {
			md, err := m.Metadata()
			complete = err == nil && md.NumPending == 0
			return true, nil
		}
		return false, nil
	})
	return count, complete, err
}

var cancelledReason = []byte(`"cancelled"`)

// isCancelledResult: only a result that names the reason anywhere is
// decoded.
func isCancelledResult(data []byte) bool {
	if !bytes.Contains(data, cancelledReason) {
		return false
	}
	var r struct {
		Reason job.Reason `json:"reason"`
	}
	return json.Unmarshal(data, &r) == nil && r.Reason == job.ReasonCancelled
}
