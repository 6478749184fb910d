package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/pkg/queue"
)

func jsFor(t testing.TB, url string, opts ...jetstream.JetStreamOpt) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestDoneLookupFindsMarkersInBatches(t *testing.T) {
	leakcheck.AtEnd(t)
	ns := natstest.RunServer(t)
	js := jsFor(t, ns.ClientURL())
	ctx := context.Background()
	n := queue.NewNames("jetpost")
	cfg := queue.StreamConfig{ResultsMaxAge: time.Hour}
	if err := queue.SetupDone(ctx, js, n, cfg); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, n.DoneBucket())
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]queue.DoneKey, queue.MaxDoneLookup)
	for i := range keys {
		keys[i] = queue.DoneKeyOf(fmt.Sprintf("job-%d", i))
	}
	for _, i := range []int{0, 17, 1023} {
		v, _ := json.Marshal(queue.DoneMarker{ID: fmt.Sprintf("job-%d", i), Batch: "b", Seq: uint64(100 + i)})
		if _, err := kv.Put(ctx, keys[i].String(), v); err != nil {
			t.Fatal(err)
		}
	}
	x := queue.NewDoneIndex(js, n)
	found, err := x.Lookup(keys).Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range found {
		switch i {
		case 0, 17, 1023:
			if m == nil || m.Seq != uint64(100+i) || m.ID != fmt.Sprintf("job-%d", i) {
				t.Errorf("key %d: %+v", i, m)
			}
		default:
			if m != nil {
				t.Errorf("key %d has a marker it was never given: %+v", i, m)
			}
		}
	}
	// None of them: one "no results" answer.
	if found, err := x.Lookup(keys[1:17]).Wait(ctx); err != nil || found != nil {
		t.Errorf("lookup of unmarked keys: %v, %v", found, err)
	}
	if _, err := x.Lookup(make([]queue.DoneKey, queue.MaxDoneLookup+1)).Wait(ctx); err == nil {
		t.Error("a lookup over the limit was accepted")
	}
	// A bucket nobody made: an error, not "nothing done".
	other := queue.NewDoneIndex(js, queue.NewNames("tenant"))
	if _, err := other.Lookup(keys[:3]).Wait(ctx); err == nil {
		t.Error("a lookup in a missing bucket succeeded")
	}
}

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
