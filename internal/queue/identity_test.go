package queue_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// A job's identity is its id and its request: the same id with another
// request has another key and other de-duplication ids.
func TestIdentityKeysAndMsgIDs(t *testing.T) {
	a, b := fpOf(1), fpOf(2)
	if queue.DoneKeyOf("1", a) == queue.DoneKeyOf("1", b) || queue.DoneKeyOf("1", a) == queue.DoneKeyOf("2", a) {
		t.Error("done keys do not tell identities apart")
	}
	if k := queue.DoneKeyOf("1", a).String(); !strings.HasPrefix(k, "f.") || len(k) != 34 {
		t.Errorf("key %q: want f. and 32 hex digits", k)
	}
	if k := queue.LegacyDoneKeyOf("1").String(); len(k) != 32 || strings.Contains(k, ".") {
		t.Errorf("legacy key %q: want the 32 hex digits of the previous version", k)
	}
	if queue.JobMsgID("1", a) == queue.JobMsgID("1", b) {
		t.Error("one de-duplication id for two requests")
	}
	j := &job.Job{ID: "1", Batch: "b", Method: "GET", URL: "https://example.com/1"}
	if queue.ResultID(j, a) == queue.ResultID(j, b) {
		t.Error("one result id for two requests in one batch")
	}
	// Ids may hold "/": no id and fingerprint spell another's message id.
	ids := map[string]string{}
	add := func(what, id string) {
		if prev, ok := ids[id]; ok {
			t.Errorf("%s and %s share the message id %q", prev, what, id)
		}
		ids[id] = what
	}
	add("job x", queue.JobMsgID("x", a))
	add("job x/"+a.String(), queue.JobMsgID("x/"+a.String(), b))
	add("run 1 of x", queue.RunMsgID("x", a, "b", 1))
	add("job x/run/b/1", queue.JobMsgID("x/"+a.String()+"/run/b/1", a))
	add("forced x", queue.ForceMsgID("x", a, "abc"))
}

// A marker written by the previous version (keyed by the id alone, with no
// fingerprint) is found under its legacy key and says so; the bucket tells
// whether it holds any, so lookups of legacy keys cost nothing once none
// are left.
func TestLegacyMarkers(t *testing.T) {
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
	x := queue.NewDoneIndex(js, n)
	if has, err := x.HasLegacy(ctx); err != nil || has {
		t.Fatalf("empty bucket: legacy %v, %v", has, err)
	}
	v, _ := json.Marshal(queue.DoneMarker{ID: "1", FP: fpOf(1), Batch: "a", Seq: 7, OK: true, Attempts: 1})
	if _, err := kv.Put(ctx, queue.DoneKeyOf("1", fpOf(1)).String(), v); err != nil {
		t.Fatal(err)
	}
	if has, err := x.HasLegacy(ctx); err != nil || has {
		t.Fatalf("new markers only: legacy %v, %v", has, err)
	}
	if _, err := kv.Put(ctx, queue.LegacyDoneKeyOf("2").String(), []byte(`{"id":"2","batch":"old","seq":3}`)); err != nil {
		t.Fatal(err)
	}
	if has, err := x.HasLegacy(ctx); err != nil || !has {
		t.Fatalf("a legacy marker: legacy %v, %v", has, err)
	}
	keys := []queue.DoneKey{queue.DoneKeyOf("1", fpOf(1)), queue.LegacyDoneKeyOf("1"), queue.LegacyDoneKeyOf("2"), queue.DoneKeyOf("2", fpOf(2))}
	found, err := x.Lookup(keys).Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m := found[0]; m == nil || m.Legacy() || !m.Of("1", fpOf(1)) || m.Of("1", fpOf(2)) {
		t.Errorf("new marker: %+v", m)
	}
	if found[1] != nil || found[3] != nil {
		t.Errorf("markers under keys never written: %+v %+v", found[1], found[3])
	}
	if m := found[2]; m == nil || !m.Legacy() || m.ID != "2" || m.Batch != "old" || m.Of("2", fpOf(2)) {
		t.Errorf("legacy marker: %+v", m)
	}
}
