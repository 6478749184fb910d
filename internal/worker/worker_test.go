package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

// fakeSender is pure logic standing in for HTTP where no request must
// happen; the broker is never faked.
type fakeSender struct{ sent int }

func (f *fakeSender) Send(context.Context, *job.Job) sender.Outcome {
	f.sent++
	return sender.Outcome{Class: sender.Succeeded, Attempted: true, Status: 200}
}

func (f *fakeSender) Post(context.Context, sender.Callback) sender.Outcome {
	return sender.Outcome{Class: sender.Succeeded, Attempted: true, Status: 204}
}

// A job older than the maximum age ends failed with reason expired, keeps
// the attempts it already spent, and sends nothing more.
func TestExpiredJobFailsWithoutSending(t *testing.T) {
	fs := &fakeSender{}
	w := worker.New(worker.Config{ID: "w", MaxAttempts: 5, MaxJobAge: time.Hour}, fs, worker.Observer{}, zerolog.Nop())
	old := &job.Job{ID: "old", Batch: "b", Method: "GET", URL: "https://example.com/", EnqueuedAt: time.Now().Add(-2 * time.Hour)}
	dec := w.Handle(context.Background(), &queue.Delivery{Job: old, Attempts: 2})
	if dec.Action != queue.AckWithResult || dec.Result == nil || dec.Result.OK || dec.Result.Reason != job.ReasonExpired || dec.Result.Attempts != 2 {
		t.Fatalf("decision %+v result %+v", dec, dec.Result)
	}
	if fs.sent != 0 {
		t.Errorf("an expired job was sent %d times", fs.sent)
	}
	fresh := &job.Job{ID: "fresh", Batch: "b", Method: "GET", URL: "https://example.com/", EnqueuedAt: time.Now()}
	if dec := w.Handle(context.Background(), &queue.Delivery{Job: fresh}); !dec.Result.OK || fs.sent != 1 {
		t.Errorf("a fresh job: %+v, sent %d", dec.Result, fs.sent)
	}
}

// Right before its request, a job of a paused batch is handed back without
// spending an attempt, and one of a cancelled batch ends cancelled,
// sending nothing, not even its callback.
func TestBatchStateCheckedBeforeTheRequest(t *testing.T) {
	fs := &fakeSender{}
	var finished []*job.Result
	w := worker.New(worker.Config{ID: "w", MaxAttempts: 5}, fs, worker.Observer{Finished: func(r *job.Result) { finished = append(finished, r) }}, zerolog.Nop())
	j := &job.Job{ID: "j", Batch: "b", Method: "GET", URL: "https://example.com/", Callback: "https://hooks.example.com/"}
	if dec := w.Handle(t.Context(), queue.DeliveryOf(j, queue.BatchPaused)); dec.Action != queue.HandBack {
		t.Errorf("paused: %+v, want a hand-back", dec)
	}
	dec := w.Handle(t.Context(), queue.DeliveryOf(j, queue.BatchCancelled))
	if r := dec.Result; dec.Action != queue.AckWithResult || r == nil || r.OK || r.Reason != job.ReasonCancelled || r.Attempts != 0 || r.Callback != nil {
		t.Errorf("cancelled: %+v %+v, want a cancelled result, no callback", dec, dec.Result)
	}
	if fs.sent != 0 || len(finished) != 1 {
		t.Errorf("sent %d, finished %d; want 0 and the cancelled one", fs.sent, len(finished))
	}
	if dec := w.Handle(t.Context(), queue.DeliveryOf(j, queue.BatchRunning)); !dec.Result.OK || fs.sent != 1 {
		t.Errorf("running: %+v, sent %d", dec.Result, fs.sent)
	}
}
