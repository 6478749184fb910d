package queue_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/nats-io/nats.go/jetstream"
)

func TestBulkPublisherDuplicatesAndRefusals(t *testing.T) {
	leakcheck.AtEnd(t)
	ns := natstest.RunServer(t)
	js := jsFor(t, ns.ClientURL(), jetstream.WithPublishAsyncMaxPending(4), jetstream.WithPublishAsyncTimeout(10*time.Second))
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "T", Subjects: []string{"t.>"}, MaxMsgs: 5, Discard: jetstream.DiscardNew, Duplicates: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	var acks []queue.BulkAck
	p := queue.NewBulkPublisher(ctx, js, 4, func(a queue.BulkAck) { acks = append(acks, a) })
	for i := range 8 {
		if err := p.Publish(ctx, &queue.BulkMsg{ID: fmt.Sprintf("a%d", i), Subject: "t.x", Data: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	// Already stored: a duplicate, with the sequence of the original.
	if err := p.Publish(ctx, &queue.BulkMsg{ID: "a1", Subject: "t.x", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	// Another de-duplication id for the same job is a new message (--force).
	if err := p.Publish(ctx, &queue.BulkMsg{ID: "a1", MsgID: "a1/force/x", Subject: "t.x", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if len(acks) != 10 {
		t.Fatalf("%d answers for 10 publishes", len(acks))
	}
	for i, a := range acks[:5] {
		if a.Err != nil || a.Duplicate || a.Seq != uint64(i+1) || a.Msg.ID != fmt.Sprintf("a%d", i) {
			t.Errorf("answer %d: %+v", i, a)
		}
	}
	for i, a := range acks[5:8] {
		var apiErr *jetstream.APIError
		if a.Err == nil || !errors.As(a.Err, &apiErr) || a.Msg.ID != fmt.Sprintf("a%d", i+5) {
			t.Errorf("answer %d: %+v, want a refusal naming a%d", i+5, a, i+5)
		}
	}
	if a := acks[8]; a.Err != nil || !a.Duplicate || a.Seq != 2 {
		t.Errorf("repeat of a1: %+v, want a duplicate of sequence 2", a)
	}
	if a := acks[9]; a.Err == nil {
		t.Errorf("forced a1 into a full stream: %+v, want refused (it is a new message)", a)
	}
}

// A window wider than the library lets pend stalls on every publish; each
// stall is waited out, and every job is stored once.
func TestBulkPublisherWaitsOutStalls(t *testing.T) {
	leakcheck.AtEnd(t)
	ns := natstest.RunServer(t)
	js := jsFor(t, ns.ClientURL(), jetstream.WithPublishAsyncMaxPending(2), jetstream.WithPublishAsyncTimeout(10*time.Second))
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Duplicates: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	p := queue.NewBulkPublisher(ctx, js, 256, func(a queue.BulkAck) {
		if a.Err == nil && !a.Duplicate {
			ok++
		}
	})
	for i := range 2000 {
		if err := p.Publish(ctx, &queue.BulkMsg{ID: fmt.Sprint(i), Subject: "s.x", Data: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ok != 2000 || info.State.Msgs != 2000 {
		t.Errorf("%d acknowledged, %d stored; want 2000 and 2000", ok, info.State.Msgs)
	}
}
