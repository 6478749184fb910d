package queue

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// BatchStatus is where one batch stands.
type BatchStatus struct {
	Batch string `json:"batch"`
	// Open counts the batch's jobs still on the jobs stream: waiting,
	// deferred for a retry, or in flight.
	Open        uint64 `json:"open"`
	Results     uint64 `json:"results"`      // results stored
	DeadLetters uint64 `json:"dead_letters"` // failed jobs currently in the dead-letter stream
}

// Overview is the state of the whole system as JetStream sees it.
type Overview struct {
	Batches []BatchStatus `json:"batches"`
	// Lag is the number of jobs no worker has been handed yet.
	Lag uint64 `json:"lag"`
	// Unacked counts jobs handed to workers and not yet settled, including
	// those waiting out a retry delay.
	Unacked int `json:"unacked"`
	// PullsWaiting counts workers' pull requests waiting for jobs.
	PullsWaiting int            `json:"pulls_waiting"`
	Breakers     []BreakerEntry `json:"breakers"`
	// Replication is each stream's and bucket's (Replication), when asked.
	Replication []StoreReplication `json:"replication,omitempty"`
	// Warnings are what could not be read, and stores below
	// JETPOST_REPLICAS or with a replica down.
	Warnings []string `json:"warnings,omitempty"`
}

// Status gathers the overview; batch "" means every batch. What cannot be
// read is a warning in the overview, not an error.
func Status(ctx context.Context, js jetstream.JetStream, n Names, batch string) (Overview, error) {
	var o Overview
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
	for _, src := range []struct {
		stream, subject string
		add             func(*BatchStatus, uint64)
	}{
		{n.JobsStream(), n.JobSubject(tok), func(s *BatchStatus, c uint64) { s.Open += c }},
		{n.ResultsStream(), n.ResultSubject(tok), func(s *BatchStatus, c uint64) { s.Results += c }},
		{n.DLQStream(), n.DLQSubject(tok), func(s *BatchStatus, c uint64) { s.DeadLetters += c }},
	} {
		st, err := js.Stream(ctx, src.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx, jetstream.WithSubjectFilter(src.subject))
		}
		if err != nil {
			// A stream offline during an outage must not hide the others.
			o.Warnings = append(o.Warnings, fmt.Sprintf("stream %s: %v; its counts are missing", src.stream, err))
			continue
		}
		for subj, c := range info.State.Subjects {
			parts := strings.SplitN(subj, ".", 3)
			if len(parts) == 3 {
				src.add(get(parts[2]), c)
			}
		}
	}
	if batch != "" {
		get(batch)
	}
	for _, s := range byBatch {
		o.Batches = append(o.Batches, *s)
	}
	sort.Slice(o.Batches, func(i, j int) bool { return o.Batches[i].Batch < o.Batches[j].Batch })

	if c, err := js.Consumer(ctx, n.JobsStream(), n.Consumer()); err == nil {
		if ci, err := c.Info(ctx); err == nil {
			o.Lag = ci.NumPending
			o.Unacked = ci.NumAckPending
			o.PullsWaiting = ci.NumWaiting
		}
	}
	// The board is auxiliary: without it the batches still show.
	var err error
	if o.Breakers, err = ReadBreakerBoard(js, n).List(ctx); err != nil {
		o.Warnings = append(o.Warnings, fmt.Sprintf("breaker board %s: %v; open breakers are not shown", n.BreakersBucket(), err))
	}
	return o, nil
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
