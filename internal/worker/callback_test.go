package worker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

// postRecorder records callback POSTs; Send must not be called when only a
// callback is re-sent.
type postRecorder struct {
	sent  int
	keys  []string
	posts []job.Result
	post  sender.Outcome
}

func (p *postRecorder) SendUntil(context.Context, *job.Job, context.Context) sender.Outcome {
	p.sent++
	return sender.Outcome{Class: sender.Succeeded, Attempted: true, Status: 200}
}

func (p *postRecorder) Post(_ context.Context, cb sender.Callback) sender.Outcome {
	var r job.Result
	_ = json.Unmarshal(cb.Body, &r)
	p.keys, p.posts = append(p.keys, cb.Key), append(p.posts, r)
	return p.post
}

// A result names its request (URL redacted) and input line, the callback
// body is that record, and the callback carries a key of its own. A callback
// message POSTs the stored result again, and sends nothing else.
func TestResultFieldsAndCallbackMessage(t *testing.T) {
	rec := &postRecorder{post: sender.Outcome{Class: sender.Permanent, Attempted: true, Status: 410}}
	w := worker.New(worker.Config{ID: "w", MaxAttempts: 2}, rec, worker.Observer{}, zerolog.Nop())
	j := &job.Job{ID: "j1", Batch: "b", Method: "DELETE", URL: "https://api.example.com/x?access_token=TOKEN",
		Callback: "https://hooks.example.com/cb", Source: "in.jsonl:7", EnqueuedAt: time.Now()}
	dec := w.Handle(context.Background(), &queue.Delivery{Job: j})
	r := dec.Result
	if dec.Action != queue.AckWithResult || r.Method != "DELETE" || r.URL != "https://api.example.com/x?access_token=REDACTED" || r.Source != "in.jsonl:7" {
		t.Fatalf("decision %+v result %+v", dec, r)
	}
	if r.Callback == nil || r.Callback.OK || r.Callback.Status != 410 || !r.OK {
		t.Errorf("the job is ok, its callback failed: %+v %+v", r, r.Callback)
	}
	if len(rec.keys) != 1 || rec.keys[0] != "j1:callback" || rec.posts[0].Source != "in.jsonl:7" || rec.posts[0].URL != r.URL {
		t.Errorf("callback POSTs: keys %q bodies %+v", rec.keys, rec.posts)
	}

	stored := *r
	rec.post = sender.Outcome{Class: sender.Succeeded, Attempted: true, Status: 204}
	dec = w.Handle(context.Background(), &queue.Delivery{Job: j.CallbackMessage(&stored)})
	if rec.sent != 1 {
		t.Errorf("a callback message sent the job's request (%d sends)", rec.sent)
	}
	if len(rec.keys) != 2 || rec.keys[1] != "j1:callback" || rec.posts[1].Callback != nil || rec.posts[1].ID != "j1" || !rec.posts[1].OK {
		t.Errorf("re-sent callback: keys %q body %+v", rec.keys, rec.posts[1])
	}
	if dec.Action != queue.AckWithResult || dec.Result.Callback == nil || !dec.Result.Callback.OK || dec.Result.Attempts != r.Attempts {
		t.Errorf("callback message decision %+v result %+v", dec, dec.Result)
	}
}

// Through a real broker: a job's request carries its id as key, its
// callback another; a re-driven job is a new run whose callback has a new
// key; a failed job whose callback failed too leaves one dead letter, the
// job's.
func TestCallbackKeysPerRun(t *testing.T) {
	ns := natstest.RunServer(t)
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	var mu sync.Mutex
	var keys []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		if r.URL.Path == "/down" {
			w.WriteHeader(http.StatusGone)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	startWorkers(t, ns, pipelineOpts{MaxAttempts: 1})
	results := enqueueAndWait(t, ns, "keys", []*job.Job{
		{ID: "k1", Method: "GET", URL: srv.URL + "/x?fail_first=1", Callback: hook.URL + "/hook"},
		{ID: "k2", Method: "GET", URL: srv.URL + "/y?status=404", Callback: hook.URL + "/down"},
	})
	if r := results["k1"]; r.OK || r.Callback == nil || !r.Callback.OK {
		t.Fatalf("k1: %+v %+v", r, r.Callback)
	}
	nc, js := connect(t, ns)
	defer nc.Close()
	ctx := context.Background()
	var reasons []string
	waitFor(t, func() bool {
		reasons = nil
		err := queue.DeadLetters(ctx, js, names, "keys", func(dl queue.StoredDeadLetter) error {
			reasons = append(reasons, dl.Result.ID+":"+string(dl.Reason))
			return nil
		})
		return err == nil && len(reasons) == 2
	})
	if slices.Sort(reasons); !slices.Equal(reasons, []string{"k1:exhausted", "k2:permanent"}) {
		t.Errorf("dead letters %q, want one per failed job, the job's", reasons)
	}
	rep, err := queue.Redrive(ctx, js, names, "keys")
	if err != nil || rep.Redriven != 2 || rep.Callbacks != 0 {
		t.Fatalf("redrive %+v %v", rep, err)
	}
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(keys) == 4
	})
	mu.Lock()
	defer mu.Unlock()
	seen := map[string]int{}
	for _, k := range keys {
		seen[k]++
	}
	for _, k := range []string{"k1:callback", "k1:callback:r1", "k2:callback", "k2:callback:r1"} {
		if seen[k] != 1 {
			t.Errorf("callback keys %q: want %s once", keys, k)
		}
	}
	if k := tg.Key("k1"); len(k.Statuses) != 2 {
		t.Errorf("k1's requests, keyed by its id: %v", k.Statuses)
	}
}

// A message that is not a valid job gets a failed result besides its dead
// letter, with what can be read of it.
func TestInvalidMessageGetsAResult(t *testing.T) {
	ns := natstest.RunServer(t)
	startWorkers(t, ns, pipelineOpts{})
	nc, js := connect(t, ns)
	defer nc.Close()
	ctx := context.Background()
	bad := `{"id":"x","batch":"inv","method":"GET","url":"ftp://u:pw@nope/?api_key=K","source":"f.jsonl:9"}`
	for _, m := range []string{bad, "{not json"} {
		if _, err := js.Publish(ctx, names.JobSubject("inv"), []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	var got []job.Result
	waitFor(t, func() bool {
		got = nil
		_, err := queue.ReadResults(ctx, js, names, "inv", func(_ uint64, data []byte) error {
			r, err := job.DecodeResult(data)
			if err == nil {
				got = append(got, *r)
			}
			return err
		})
		return err == nil && len(got) == 2
	})
	for _, r := range got {
		if r.OK || r.Reason != job.ReasonInvalid || r.Error == "" || r.Batch != "inv" {
			t.Errorf("invalid message's result %+v", r)
		}
	}
	// Settled concurrently: in either order. Neither claims a job's id (a
	// reader would take it for that job's result); the error names it.
	slices.SortFunc(got, func(a, b job.Result) int { return strings.Compare(b.URL, a.URL) })
	if r := got[0]; r.ID != "" || !strings.Contains(r.Error, `"x"`) || r.Method != "GET" || r.Source != "f.jsonl:9" || r.URL != "ftp://REDACTED@nope/?api_key=REDACTED" {
		t.Errorf("what could be read of it: %+v", r)
	}
	if got[1].ID != "" || got[1].URL != "" {
		t.Errorf("not JSON, yet an id or URL: %+v", got[1])
	}
}
