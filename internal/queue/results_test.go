package queue_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

func TestReadAndFetchResults(t *testing.T) {
	leakcheck.AtEnd(t)
	ns := natstest.RunServer(t)
	js := jsFor(t, ns.ClientURL())
	ctx := context.Background()
	n := queue.NewNames("jetpost")
	if err := queue.Setup(ctx, js, n, queue.StreamConfig{DedupWindow: time.Minute, ResultsMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	var mine []uint64
	for i := range 100 {
		batch := "other"
		if i%2 == 0 {
			batch = "mine"
		}
		ack, err := js.Publish(ctx, n.ResultSubject(batch), fmt.Appendf(nil, `{"id":"%s-%d"}`, batch, i))
		if err != nil {
			t.Fatal(err)
		}
		if batch == "mine" {
			mine = append(mine, ack.Sequence)
		}
	}
	count, err := queue.ReadResults(ctx, js, n, "mine", func(seq uint64, _ []byte) error { return nil })
	if err != nil || count != 50 {
		t.Fatalf("ReadResults: %d, %v; want 50", count, err)
	}
	if count, err := queue.ReadResults(ctx, js, n, "none", func(uint64, []byte) error { return nil }); err != nil || count != 0 {
		t.Errorf("ReadResults of an empty batch: %d, %v", count, err)
	}
	if c, err := queue.ResultBatchCount(ctx, js, n, "mine"); err != nil || c != 50 {
		t.Errorf("ResultBatchCount: %d, %v", c, err)
	}
	// A few (one by one) and many (one consumer), each with a sequence of
	// another batch and one past the end, which are left out.
	for _, want := range [][]uint64{mine[3:8], mine[2:45]} {
		seqs := append([]uint64{want[0] - 1}, want...)
		seqs = append(seqs, 10_000)
		var got []uint64
		err := queue.FetchResults(ctx, js, n, "mine", seqs, func(seq uint64, _ []byte) error {
			got = append(got, seq)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("FetchResults(%d seqs) = %v, want %v", len(seqs), got, want)
		}
	}
}

// A batch re-driven holds several results for some jobs: the latest in
// stream order is each job's one, the others are superseded.
func TestReadLatestResultsGivesOnePerJob(t *testing.T) {
	leakcheck.AtEnd(t)
	ns := natstest.RunServer(t)
	js := jsFor(t, ns.ClientURL())
	ctx := context.Background()
	n := queue.NewNames("jetpost")
	if err := queue.Setup(ctx, js, n, queue.StreamConfig{DedupWindow: time.Minute, ResultsMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	stored := []struct{ batch, id, run string }{
		{"b", "a", "1"}, {"b", "b", "1"}, {"other", "a", "1"}, {"b", "a", "2"}, {"b", "c", "1"}, {"b", "b", "2"}, {"b", "a", "3"},
		{"b", `q"<`, "1"}, {"b", `q"<`, "2"}, // escaped in JSON
	}
	for _, s := range stored {
		rec, _ := job.EncodeResult(&job.Result{ID: s.id, Batch: s.batch, Body: s.run})
		if _, err := js.Publish(ctx, n.ResultSubject(s.batch), rec); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	st, err := queue.ReadLatestResults(ctx, js, n, "b", func(_ uint64, data []byte) error {
		r, err := job.DecodeResult(data)
		got = append(got, r.ID+r.Body)
		return err
	})
	if err != nil || st.Results != 4 || st.Superseded != 4 {
		t.Fatalf("ReadLatestResults: %+v, %v; want 4 results, 4 superseded", st, err)
	}
	if strings.Join(got, " ") != `c1 b2 a3 q"<2` {
		t.Errorf("latest results %v, want c1 b2 a3 q\"<2 (stream order)", got)
	}
	if st, err := queue.ReadLatestResults(ctx, js, n, "none", func(uint64, []byte) error { return nil }); err != nil || st.Results != 0 {
		t.Errorf("empty batch: %+v, %v", st, err)
	}
}
