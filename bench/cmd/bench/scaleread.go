package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// scaleResults is what the results stream holds for the scale batch, read
// message by message (not `enqueue results`, which keeps one result per
// job and so would hide a second one).
type scaleResults struct {
	stored     int     // messages read
	distinct   int     // jobs with at least one result
	duplicates int     // results beyond the first for a job
	foreign    int     // results whose id is not one of the batch's jobs
	ok         int     // results with ok=true
	firstDup   string  // the first job seen twice, for the error
	times      []int64 // when each result was stored (Unix ns), sorted
	took       time.Duration
}

// problem says what is wrong with res for n jobs ("" if nothing).
func (res scaleResults) problem(n int) string {
	var p []string
	if missing := n - res.distinct; missing > 0 {
		p = append(p, fmt.Sprintf("%d of %d jobs without a result", missing, n))
	}
	if res.duplicates > 0 {
		p = append(p, fmt.Sprintf("%d second results (first: %s)", res.duplicates, res.firstDup))
	}
	if res.foreign > 0 {
		p = append(p, fmt.Sprintf("%d results for jobs not in the batch", res.foreign))
	}
	return strings.Join(p, "; ")
}

// resultID is the part of a result the count needs.
type resultID struct {
	ID string `json:"id"`
	OK bool   `json:"ok"`
}

// readScaleResults reads every result of batch (jobs named batch-NNNNNN,
// index below n) with an ordered consumer, marking each job in a bitmap.
func readScaleResults(ctx context.Context, url, batch string, n int) (scaleResults, error) {
	res := scaleResults{times: make([]int64, 0, n)}
	start := time.Now()
	nc, err := nats.Connect(url)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	subj := names.ResultSubject(batch)
	s, err := js.Stream(ctx, names.ResultsStream())
	if err != nil {
		return res, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return res, err
	}
	total := int(info.State.Subjects[subj])
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return res, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return res, err
	}
	defer it.Stop()
	// Next has no deadline: a read that stops making progress (or the
	// benchmark being stopped) ends the iterator, and Next returns.
	idle := time.AfterFunc(time.Minute, it.Stop)
	defer idle.Stop()
	defer context.AfterFunc(ctx, it.Stop)()
	seen := newBitmap(n)
	prefix := batch + "-"
	var r resultID
	for res.stored < total {
		m, err := it.Next()
		if err != nil {
			return res, fmt.Errorf("after %d of %d results: %w", res.stored, total, err)
		}
		res.stored++
		idle.Reset(time.Minute)
		md, err := m.Metadata()
		if err != nil {
			return res, err
		}
		res.times = append(res.times, md.Timestamp.UnixNano())
		r = resultID{}
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			return res, fmt.Errorf("result %d: %w", md.Sequence.Stream, err)
		}
		if r.OK {
			res.ok++
		}
		i, err := strconv.Atoi(strings.TrimPrefix(r.ID, prefix))
		if err != nil || !strings.HasPrefix(r.ID, prefix) || i < 0 || i >= n {
			res.foreign++
			continue
		}
		if seen.set(i) {
			res.duplicates++
			if res.firstDup == "" {
				res.firstDup = r.ID
			}
		}
	}
	res.distinct = seen.count(n)
	slices.Sort(res.times)
	res.took = time.Since(start)
	return res, nil
}

// countLines counts the lines of a file without holding it.
func countLines(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	buf := make([]byte, 1<<20)
	n := 0
	for {
		k, err := r.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
