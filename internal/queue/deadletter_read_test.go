package queue_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// DeadLetters reads, in order, the dead letters of one batch or of all,
// as stored when it starts: one stored while it reads is left for the next
// reading.
func TestDeadLettersReadsWhatIsStored(t *testing.T) {
	leakcheck.AtEnd(t)
	ns := natstest.RunServer(t)
	js := jsFor(t, ns.ClientURL())
	ctx := context.Background()
	n := queue.NewNames("jetpost")
	if err := queue.Setup(ctx, js, n, queue.StreamConfig{DedupWindow: time.Minute, ResultsMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	store := func(batch, id string) {
		t.Helper()
		b, err := json.Marshal(queue.DeadLetter{Result: job.Result{ID: id, Batch: batch, Reason: job.ReasonPermanent}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, n.DLQSubject(batch), b); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []struct{ batch, id string }{{"a", "a1"}, {"b", "b1"}, {"a", "a2"}, {"b", "b2"}, {"a", "a3"}} {
		store(l.batch, l.id)
	}
	read := func(batch string, during func()) []string {
		t.Helper()
		var ids []string
		var last uint64
		err := queue.DeadLetters(ctx, js, n, batch, func(dl queue.StoredDeadLetter) error {
			if dl.Seq <= last {
				t.Errorf("dead letter %d after %d: out of order", dl.Seq, last)
			}
			last = dl.Seq
			ids = append(ids, dl.Result.ID)
			if during != nil {
				during()
				during = nil
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if got := read("a", nil); len(got) != 3 || got[0] != "a1" || got[2] != "a3" {
		t.Errorf("batch a: %v, want [a1 a2 a3]", got)
	}
	if got := read("", func() { store("a", "a4") }); len(got) != 5 {
		t.Errorf("all batches, one stored while reading: %v, want the 5 stored before", got)
	}
	if got := read("", nil); len(got) != 6 || got[5] != "a4" {
		t.Errorf("all batches: %v, want 6 ending in a4", got)
	}
	if got := read("none", nil); len(got) != 0 {
		t.Errorf("batch without dead letters: %v", got)
	}
}
