package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
)

func TestParsePriority(t *testing.T) {
	for in, want := range map[string]int{"": queue.WeightNormal, "normal": queue.WeightNormal, "HIGH": queue.WeightHigh,
		"low": queue.WeightLow, "7": 7, "100": queue.MaxWeight} {
		if got, err := queue.ParsePriority(in); err != nil || got != want {
			t.Errorf("ParsePriority(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "101", "-1", "urgent", "1.5"} {
		if _, err := queue.ParsePriority(in); err == nil {
			t.Errorf("ParsePriority(%q) accepted", in)
		}
	}
	for _, w := range []int{queue.WeightLow, queue.WeightNormal, queue.WeightHigh, 7} {
		if got, _ := queue.ParsePriority(queue.PriorityName(w)); got != w {
			t.Errorf("PriorityName(%d) = %q reads back as %d", w, queue.PriorityName(w), got)
		}
	}
}

func TestBatchConsumerNames(t *testing.T) {
	n := queue.NewNames("jetpost")
	if got := n.BatchConsumer("jetpost.jobs.orders-1"); got != "batch_orders-1" {
		t.Errorf("valid batch: %q", got)
	}
	a, b := n.BatchConsumer("jetpost.jobs.a.b"), n.BatchConsumer("jetpost.jobs.a.c")
	if a == b || len(a) != len("subject_")+16 {
		t.Errorf("other subjects: %q, %q", a, b)
	}
}

// TestBatchesUpdateWatchForget: updates are seen by a live view, a
// concurrent update is not lost, and Forget does not delete an entry
// updated since the revision it was given.
func TestBatchesUpdateWatchForget(t *testing.T) {
	ns := natstest.RunServer(t)
	js := jsFor(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := queue.NewNames("jetpost")
	bs, err := queue.OpenBatches(ctx, js, n, queue.StreamConfig{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	view, err := bs.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := view.Get("b1"); got != queue.DefaultBatchControl("b1") {
		t.Fatalf("no entry: %+v", got)
	}
	_, rev1, err := bs.Update(ctx, "b1", func(c *queue.BatchControl) { c.Weight = queue.WeightHigh })
	if err != nil {
		t.Fatal(err)
	}
	_, rev2, err := bs.Update(ctx, "b1", func(c *queue.BatchControl) { c.State = queue.BatchPaused })
	if err != nil {
		t.Fatal(err)
	}
	for view.Revision() < rev2 {
		select {
		case <-view.Changed():
		case <-ctx.Done():
			t.Fatal("the view never saw the update")
		}
	}
	if got := view.Get("b1"); got.Weight != queue.WeightHigh || got.State != queue.BatchPaused {
		t.Fatalf("view: %+v", got)
	}
	if err := bs.Forget(ctx, "b1", rev1); err != nil {
		t.Fatal(err)
	}
	if got, rev, err := bs.Get(ctx, "b1"); err != nil || rev != rev2 || got.State != queue.BatchPaused {
		t.Fatalf("a stale Forget deleted the entry: %+v rev %d err %v", got, rev, err)
	}
	if err := bs.Forget(ctx, "b1", rev2); err != nil {
		t.Fatal(err)
	}
	if _, rev, err := bs.Get(ctx, "b1"); err != nil || rev != 0 {
		t.Fatalf("after Forget: rev %d err %v", rev, err)
	}
	list, err := bs.List(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("List after Forget: %v %v", list, err)
	}
	if _, _, err := bs.Update(ctx, "no.dots", func(*queue.BatchControl) {}); err == nil {
		t.Fatal("an invalid batch name was written")
	}
}
