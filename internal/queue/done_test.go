package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

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
		keys[i] = queue.DoneKeyOf(fmt.Sprintf("job-%d", i), fpOf(i))
	}
	for _, i := range []int{0, 17, 1023} {
		v, _ := json.Marshal(queue.DoneMarker{ID: fmt.Sprintf("job-%d", i), FP: fpOf(i), Batch: "b", Seq: uint64(100 + i)})
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
			if m == nil || m.Seq != uint64(100+i) || !m.Of(fmt.Sprintf("job-%d", i), fpOf(i)) || m.Legacy() {
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

// A marker carries the outcome and the server's time; only a run that
// started no request counts as having sent nothing.
func TestDoneMarkerSaysWhetherAnythingWasSent(t *testing.T) {
	leakcheck.AtEnd(t)
	ns := natstest.RunServer(t)
	js := jsFor(t, ns.ClientURL())
	ctx := context.Background()
	n := queue.NewNames("jetpost")
	if err := queue.SetupDone(ctx, js, n, queue.StreamConfig{ResultsMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, n.DoneBucket())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		m    queue.DoneMarker
		sent bool
	}{
		{queue.DoneMarker{OK: true, Attempts: 1}, true},
		{queue.DoneMarker{Reason: job.ReasonRefused}, false},
		{queue.DoneMarker{Reason: job.ReasonRefused, Attempts: 2}, true}, // refused on a retry
		{queue.DoneMarker{Reason: job.ReasonExpired}, false},
		{queue.DoneMarker{Reason: job.ReasonExpired, Attempts: 1}, true},
		{queue.DoneMarker{Reason: job.ReasonCancelled}, false},
		{queue.DoneMarker{Reason: job.ReasonBreakerOpen}, false},
		{queue.DoneMarker{Reason: job.ReasonBreakerOpen, Attempts: 1}, true}, // its probe was sent
		{queue.DoneMarker{Reason: job.ReasonPermanent, Attempts: 1}, true},
		{queue.DoneMarker{Reason: job.ReasonInvalid}, true},
		{queue.DoneMarker{}, true}, // written before markers carried the outcome
	}
	keys := make([]queue.DoneKey, len(cases))
	for i, c := range cases {
		c.m.ID, c.m.FP, c.m.Batch, c.m.Seq, c.m.Run = fmt.Sprint("job-", i), fpOf(i), "b", uint64(i+1), i
		keys[i] = queue.DoneKeyOf(c.m.ID, c.m.FP)
		v, _ := json.Marshal(c.m)
		if _, err := kv.Put(ctx, keys[i].String(), v); err != nil {
			t.Fatal(err)
		}
	}
	found, err := queue.NewDoneIndex(js, n).Lookup(keys).Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		m := found[i]
		if m == nil || m.At.IsZero() || m.Run != i || m.Reason != c.m.Reason || m.Attempts != c.m.Attempts {
			t.Errorf("marker %d: %+v, want %+v with a time", i, m, c.m)
			continue
		}
		if m.SentNothing() == c.sent {
			t.Errorf("marker %+v: SentNothing %v", c.m, m.SentNothing())
		}
		if want := fmt.Sprintf("%s/%s/run/b/%d", m.ID, m.FP, i+1); queue.RerunMsgID(m, m.FP) != want {
			t.Errorf("RerunMsgID %q, want %q", queue.RerunMsgID(m, m.FP), want)
		}
	}
}

// fpOf is a made-up request fingerprint for test job i.
func fpOf(i int) job.Fingerprint {
	return (&job.Job{Method: "GET", URL: fmt.Sprintf("https://example.com/%d", i)}).Fingerprint(nil, nil)
}
