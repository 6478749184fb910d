package queue

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/natstest"
)

// The overview's count of cancelled results stops at its budget and says
// it is a lower bound; without a budget every result is read.
func TestCountCancelledBudget(t *testing.T) {
	ns := natstest.RunServer(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // bounds a broken test only
	defer cancel()
	n := NewNames("jetpost")
	if err := Setup(ctx, js, n, StreamConfig{Replicas: 1, DedupWindow: time.Minute, ResultsMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{`{"id":"1","ok":false,"reason":"cancelled"}`, `{"id":"2","ok":true,"error":"cancelled by the target"}`,
		`{"id":"3","ok":false,"reason":"cancelled"}`, `{"id":"4","ok":false,"reason":"cancelled"}`} {
		if _, err := js.Publish(ctx, n.ResultSubject("c"), []byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	from := time.Now().Add(-time.Hour)
	if got, complete, err := countCancelled(ctx, js, n, "c", from, 0); err != nil || got != 3 || !complete {
		t.Errorf("no budget: %d, complete %v, %v; want 3, complete", got, complete, err)
	}
	if got, complete, err := countCancelled(ctx, js, n, "c", from, 2); err != nil || got != 1 || complete {
		t.Errorf("budget 2: %d, complete %v, %v; want 1 (of the first two), partial", got, complete, err)
	}
	if got, complete, err := countCancelled(ctx, js, n, "c", from, 4); err != nil || got != 3 || !complete {
		t.Errorf("budget 4 of 4: %d, complete %v, %v; want 3, complete", got, complete, err)
	}
}
