package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/queue"
)

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
		c.m.ID, c.m.Batch, c.m.Seq, c.m.Run = fmt.Sprint("job-", i), "b", uint64(i+1), i
		keys[i] = queue.DoneKeyOf(c.m.ID)
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
		if !strings.HasPrefix(queue.RerunMsgID(m), m.ID+"/run/b/") {
			t.Errorf("RerunMsgID %q", queue.RerunMsgID(m))
		}
	}
}
