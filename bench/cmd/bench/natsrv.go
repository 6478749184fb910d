package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

var names = queue.NewNames("jetpost")

// broker is the benchmark's embedded JetStream server (benchkit.Broker),
// with the result reading the scenarios need.
type broker struct{ *benchkit.Broker }

func startBroker(parent string) (*broker, error) {
	b, err := benchkit.StartBroker(parent, 8<<20)
	if err != nil {
		return nil, err
	}
	return &broker{b}, nil
}

func (b *broker) stop() { b.Stop() }

// resultStats reads back what the results stream holds for a batch.
type resultStats struct {
	stored   uint64        // messages on the batch's result subject
	ok       int           // results with ok=true (only when read in full)
	span     time.Duration // first to last stored result
	maxGap   time.Duration // longest pause between consecutive results (read in full)
	first    time.Time
	last     time.Time
	attempts int
	times    []time.Time // when each result was stored, in order (read in full)
}

// readResults counts a batch's stored results and, when full is set, reads
// them all (ordered consumer) for ok counts and the longest pause.
func (b *broker) readResults(ctx context.Context, batch string, full bool) (resultStats, error) {
	var rs resultStats
	nc, err := nats.Connect(b.URL)
	if err != nil {
		return rs, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return rs, err
	}
	subj := names.ResultSubject(batch)
	s, err := js.Stream(ctx, names.ResultsStream())
	if err != nil {
		return rs, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return rs, err
	}
	rs.stored = info.State.Subjects[subj]
	if rs.stored == 0 {
		return rs, nil
	}
	if !full {
		first, err := s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
		if err != nil {
			return rs, err
		}
		last, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return rs, err
		}
		rs.first, rs.last = first.Time, last.Time
		rs.span = rs.last.Sub(rs.first)
		return rs, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return rs, err
	}
	times := make([]time.Time, 0, rs.stored)
	for uint64(len(times)) < rs.stored {
		batchMsgs, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return rs, err
		}
		n := 0
		for m := range batchMsgs.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return rs, err
			}
			times = append(times, md.Timestamp)
			if r, err := job.DecodeResult(m.Data()); err == nil {
				if r.OK {
					rs.ok++
				}
				rs.attempts += r.Attempts
			}
		}
		if err := batchMsgs.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return rs, err
		}
		if n == 0 {
			return rs, fmt.Errorf("results of %s: read %d of %d", batch, len(times), rs.stored)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	rs.times = times
	rs.first, rs.last = times[0], times[len(times)-1]
	rs.span = rs.last.Sub(rs.first)
	for i := 1; i < len(times); i++ {
		rs.maxGap = max(rs.maxGap, times[i].Sub(times[i-1]))
	}
	return rs, nil
}
