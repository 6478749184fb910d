package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

// scriptedSender answers Send and Post from scripts, in order: pure logic
// for the worker's decision table, no request made. An unscripted call
// fails the test.
type scriptedSender struct {
	t     *testing.T
	sends []sender.Outcome
	posts []sender.Outcome
	sent  int
	// posted holds the body of every Post, decoded; callbacks the rest.
	posted    []job.Result
	callbacks []sender.Callback
}

func (s *scriptedSender) SendUntil(context.Context, *job.Job, context.Context) sender.Outcome {
	s.sent++
	if len(s.sends) == 0 {
		s.t.Errorf("unscripted Send (#%d)", s.sent)
		return sender.Outcome{Class: sender.Permanent, Err: errors.New("unscripted")}
	}
	o := s.sends[0]
	s.sends = s.sends[1:]
	return o
}

func (s *scriptedSender) Post(_ context.Context, cb sender.Callback) sender.Outcome {
	var r job.Result
	if err := json.Unmarshal(cb.Body, &r); err != nil {
		s.t.Errorf("callback body: %v", err)
	}
	s.posted, s.callbacks = append(s.posted, r), append(s.callbacks, cb)
	if len(s.posts) == 0 {
		s.t.Errorf("unscripted Post (#%d)", len(s.posted))
		return sender.Outcome{Class: sender.Permanent, Err: errors.New("unscripted")}
	}
	o := s.posts[0]
	s.posts = s.posts[1:]
	return o
}

// decisionBundle is what each row of the decision table works with.
type decisionBundle struct {
	w        *worker.Worker
	snd      *scriptedSender
	cfg      worker.Config
	job      *job.Job
	deferred []queue.Action // Observer.Deferred
	finished []*job.Result  // Observer.Finished
}

// handle runs one delivery of b.job (or of d.Job when set).
func (b *decisionBundle) handle(ctx context.Context, d queue.Delivery) queue.Decision {
	if d.Job == nil {
		d.Job = b.job
	}
	return b.w.Handle(ctx, &d)
}

// ceiling is the longest backoff after tries spent tries.
func (b *decisionBundle) ceiling(tries int) time.Duration {
	return b.cfg.Backoff.Delay(tries, func() float64 { return 1 })
}

func setup(t *testing.T) *decisionBundle {
	t.Helper()
	b := &decisionBundle{
		snd: &scriptedSender{t: t},
		cfg: worker.Config{ID: "w1", MaxAttempts: 3, Backoff: sender.Backoff{Base: time.Second, Cap: 8 * time.Second}, MaxJobAge: time.Hour},
		job: &job.Job{ID: "j1", Batch: "b", Method: "POST", URL: "https://api.example.com/orders", EnqueuedAt: time.Now()},
	}
	obs := worker.Observer{
		Deferred: func(_ string, a queue.Action) { b.deferred = append(b.deferred, a) },
		Finished: func(r *job.Result) { b.finished = append(b.finished, r) },
	}
	b.w = worker.New(b.cfg, b.snd, obs, zerolog.Nop())
	return b
}

// acked checks an AckWithResult decision and returns its result.
func acked(t *testing.T, b *decisionBundle, dec queue.Decision, ok bool, reason job.Reason, attempts int) *job.Result {
	t.Helper()
	r := dec.Result
	if dec.Action != queue.AckWithResult || r == nil {
		t.Fatalf("decision %+v, want %v with a result", dec, queue.AckWithResult)
	}
	if r.OK != ok || r.Reason != reason || r.Attempts != attempts || r.ID != b.job.ID || r.Worker != "w1" {
		t.Errorf("result %+v, want ok=%v reason=%q attempts=%d", r, ok, reason, attempts)
	}
	if len(b.finished) != 1 || b.finished[0] != r || len(b.deferred) != 0 {
		t.Errorf("observer: finished %v, deferred %v; want this result finished, nothing deferred", b.finished, b.deferred)
	}
	return r
}

func turnAway() sender.Outcome {
	return sender.Outcome{Class: sender.Postponed, RetryAfter: time.Hour,
		Err: fmt.Errorf("not sent: %w", &sender.BreakerOpenError{Host: "api.example.com:443", State: job.BreakerOpen})}
}

func retryable(retryAfter time.Duration) sender.Outcome {
	return sender.Outcome{Class: sender.Retryable, Attempted: true, Status: 503, RetryAfter: retryAfter, Err: errors.New("status 503")}
}

// One subtest per row of the decision table in doc.go.
func TestDecisionTable(t *testing.T) {
	t.Run("Succeeded", func(t *testing.T) {
		b := setup(t)
		b.snd.sends = []sender.Outcome{{Class: sender.Succeeded, Attempted: true, Status: 201, Body: []byte("made")}}
		r := acked(t, b, b.handle(t.Context(), queue.Delivery{Attempts: 1}), true, "", 2)
		if r.Status != 201 || r.Body != "made" || r.Error != "" {
			t.Errorf("result %+v", r)
		}
	})
	t.Run("Permanent", func(t *testing.T) {
		b := setup(t)
		b.snd.sends = []sender.Outcome{{Class: sender.Permanent, Attempted: true, Status: 404, Err: errors.New("status 404")}}
		r := acked(t, b, b.handle(t.Context(), queue.Delivery{}), false, job.ReasonPermanent, 1)
		if r.Status != 404 || r.Error != "status 404" {
			t.Errorf("result %+v", r)
		}
	})
	t.Run("PermanentRefusedAddress", func(t *testing.T) {
		b := setup(t)
		refused := &sender.RefusedError{Addr: netip.MustParseAddr("10.0.0.1"), Reason: "private"}
		b.snd.sends = []sender.Outcome{{Class: sender.Permanent, Err: fmt.Errorf("dial: %w", refused)}}
		acked(t, b, b.handle(t.Context(), queue.Delivery{Attempts: 1}), false, job.ReasonRefused, 1)
	})
	t.Run("RetryableTriesLeft", func(t *testing.T) {
		b := setup(t)
		b.snd.sends = []sender.Outcome{retryable(7 * time.Second), retryable(0)}
		dec := b.handle(t.Context(), queue.Delivery{Attempts: 1})
		if dec.Action != queue.NakAfterAttempt || dec.Attempts != 2 || dec.TurnedAway != 0 || dec.Delay != 7*time.Second || dec.Result != nil {
			t.Errorf("with Retry-After: %+v, want %v after 7s recording 2 attempts", dec, queue.NakAfterAttempt)
		}
		// Without a hint the backoff decides, counting turn-aways as tries.
		dec = b.handle(t.Context(), queue.Delivery{TurnedAway: 1})
		if dec.Action != queue.NakAfterAttempt || dec.Attempts != 1 || dec.TurnedAway != 1 || dec.Delay > b.ceiling(2) {
			t.Errorf("backoff: %+v, want %v within %v", dec, queue.NakAfterAttempt, b.ceiling(2))
		}
		if len(b.deferred) != 2 || b.deferred[0] != queue.NakAfterAttempt || len(b.finished) != 0 {
			t.Errorf("observer: deferred %v finished %v", b.deferred, b.finished)
		}
	})
	t.Run("RetryableTriesSpentExhausted", func(t *testing.T) {
		b := setup(t)
		b.snd.sends = []sender.Outcome{retryable(time.Second)}
		r := acked(t, b, b.handle(t.Context(), queue.Delivery{Attempts: 2}), false, job.ReasonExhausted, 3)
		if r.Status != 503 || r.Error != "status 503" {
			t.Errorf("result %+v", r)
		}
	})
	t.Run("BreakerTurnAwayTriesLeft", func(t *testing.T) {
		b := setup(t)
		b.snd.sends = []sender.Outcome{turnAway()}
		dec := b.handle(t.Context(), queue.Delivery{Attempts: 1})
		if dec.Action != queue.NakAfter || dec.Attempts != 1 || dec.TurnedAway != 1 || dec.Delay > b.ceiling(2) || dec.Result != nil {
			t.Errorf("%+v, want %v recording one turn-away, within %v", dec, queue.NakAfter, b.ceiling(2))
		}
		if len(b.deferred) != 1 || b.deferred[0] != queue.NakAfter {
			t.Errorf("observer: deferred %v", b.deferred)
		}
	})
	t.Run("BreakerTurnAwayLastTry", func(t *testing.T) {
		b := setup(t)
		b.snd.sends = []sender.Outcome{turnAway()}
		r := acked(t, b, b.handle(t.Context(), queue.Delivery{Attempts: 1, TurnedAway: 1}), false, job.ReasonBreakerOpen, 1)
		if r.Status != 0 {
			t.Errorf("result %+v: nothing was sent in this delivery", r)
		}
	})
	t.Run("HostLimitDeferral", func(t *testing.T) {
		b := setup(t)
		b.snd.sends = []sender.Outcome{{Class: sender.Postponed, RetryAfter: 250 * time.Millisecond,
			Err: fmt.Errorf("not sent: %w", &sender.NotAdmittedError{Host: "api.example.com:443", Reason: "concurrency limit 1 reached"})}}
		// Even on the last try: a full host spends nothing.
		dec := b.handle(t.Context(), queue.Delivery{Attempts: 2})
		if dec.Action != queue.NakAfter || dec.Delay != 250*time.Millisecond || dec.Attempts != 0 || dec.TurnedAway != 0 || dec.Result != nil {
			t.Errorf("%+v, want %v after the limit's wait, nothing recorded", dec, queue.NakAfter)
		}
	})
	t.Run("ShutdownHandBack", func(t *testing.T) {
		b := setup(t)
		b.snd.sends = []sender.Outcome{{Class: sender.Retryable, Attempted: true, Err: context.Canceled}}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		dec := b.handle(ctx, queue.Delivery{Attempts: 2})
		if dec.Action != queue.HandBack || dec.Result != nil || len(b.finished)+len(b.deferred) != 0 {
			t.Errorf("%+v (finished %v, deferred %v), want %v and nothing else", dec, b.finished, b.deferred, queue.HandBack)
		}
	})
	t.Run("Expired", func(t *testing.T) {
		b := setup(t)
		b.job.EnqueuedAt = time.Now().Add(-2 * b.cfg.MaxJobAge)
		acked(t, b, b.handle(t.Context(), queue.Delivery{Attempts: 1}), false, job.ReasonExpired, 1)
		if b.snd.sent != 0 {
			t.Errorf("an expired job was sent")
		}
	})
	t.Run("CallbackOK", func(t *testing.T) {
		b := setup(t)
		b.job.Callback = "https://hooks.example.com/cb"
		b.snd.sends = []sender.Outcome{{Class: sender.Succeeded, Attempted: true, Status: 200}}
		b.snd.posts = []sender.Outcome{{Class: sender.Succeeded, Attempted: true, Status: 204}}
		r := acked(t, b, b.handle(t.Context(), queue.Delivery{}), true, "", 1)
		if cb := r.Callback; cb == nil || !cb.OK || cb.Status != 204 || cb.Attempts != 1 {
			t.Errorf("callback %+v", cb)
		}
		if len(b.snd.posted) != 1 || b.snd.posted[0].ID != "j1" || b.snd.posted[0].Callback != nil {
			t.Errorf("posted %+v, want the result without its callback's outcome", b.snd.posted)
		}
	})
	t.Run("CallbackFailed", func(t *testing.T) {
		b := setup(t)
		b.job.Callback = "https://hooks.example.com/cb"
		b.snd.sends = []sender.Outcome{{Class: sender.Succeeded, Attempted: true, Status: 200}}
		b.snd.posts = []sender.Outcome{{Class: sender.Permanent, Attempted: true, Status: 410, Err: errors.New("status 410")}}
		r := acked(t, b, b.handle(t.Context(), queue.Delivery{}), true, "", 1)
		if cb := r.Callback; cb == nil || cb.OK || cb.Status != 410 || cb.Error != "status 410" || cb.Attempts != 1 {
			t.Errorf("callback %+v: the job stays ok, its callback failed after one permanent answer", cb)
		}
	})
	t.Run("RedrivenCallbackMessage", func(t *testing.T) {
		b := setup(t)
		b.job.Callback = "https://hooks.example.com/cb"
		stored := &job.Result{ID: "j1", Batch: "b", OK: true, Status: 200, Attempts: 2, Worker: "w0",
			Callback: &job.CallbackResult{Status: 500, Attempts: 3, Error: "status 500"}}
		b.snd.posts = []sender.Outcome{{Class: sender.Succeeded, Attempted: true, Status: 204}}
		dec := b.handle(t.Context(), queue.Delivery{Job: b.job.CallbackMessage(stored)})
		r := dec.Result
		if dec.Action != queue.AckWithResult || r == nil || !r.OK || r.Attempts != 2 || r.Worker != "w0" {
			t.Fatalf("%+v result %+v, want the stored result acked", dec, r)
		}
		if cb := r.Callback; cb == nil || !cb.OK || cb.Attempts != 1 {
			t.Errorf("callback %+v, want the new POST's outcome", cb)
		}
		if b.snd.sent != 0 || len(b.snd.posted) != 1 || b.snd.posted[0].Callback != nil {
			t.Errorf("sent %d, posted %+v; want only the stored result POSTed, without its old callback", b.snd.sent, b.snd.posted)
		}
	})
	callbackDecisions(t)
}

// heldByLimits is a POST the host limits turned away for wait.
func heldByLimits(wait time.Duration) sender.Outcome {
	return sender.Outcome{Class: sender.Postponed, RetryAfter: wait,
		Err: fmt.Errorf("not sent: %w", &sender.NotAdmittedError{Host: "hooks.example.com:443", Reason: "rate limit 1/s reached", Wait: wait})}
}

// Callbacks and the host limits: a POST turned away waits as long as the
// limits ask and spends no try, within MaxCallbackDefer; an open breaker's
// turn-aways still spend tries.
func callbackDecisions(t *testing.T) {
	t.Run("CallbackHeldByHostLimitsWaitsWithoutSpendingTries", func(t *testing.T) {
		b := setup(t)
		b.job.Callback, b.job.Rate = "https://hooks.example.com/cb", 2.5
		b.snd.sends = []sender.Outcome{{Class: sender.Succeeded, Attempted: true, Status: 200}}
		// More turn-aways than MaxAttempts (3), then the POST is admitted.
		for range 2 * b.cfg.MaxAttempts {
			b.snd.posts = append(b.snd.posts, heldByLimits(time.Millisecond))
		}
		b.snd.posts = append(b.snd.posts, sender.Outcome{Class: sender.Succeeded, Attempted: true, Status: 204})
		r := acked(t, b, b.handle(t.Context(), queue.Delivery{}), true, "", 1)
		if cb := r.Callback; cb == nil || !cb.OK || cb.Attempts != 1 || len(b.snd.posted) != 2*b.cfg.MaxAttempts+1 {
			t.Errorf("callback %+v after %d POSTs; want delivered with one attempt", cb, len(b.snd.posted))
		}
		want := sender.Callback{URL: b.job.Callback, Key: "j1:callback", Batch: "b", BatchRate: 2.5}
		if got := b.snd.callbacks[0]; got.URL != want.URL || got.Key != want.Key || got.Batch != want.Batch || got.BatchRate != want.BatchRate {
			t.Errorf("callback asked for %+v; want the job's batch and rate: %+v", got, want)
		}
	})
	t.Run("CallbackNotAdmittedInTimeFails", func(t *testing.T) {
		b := setup(t)
		b.job.Callback = "https://hooks.example.com/cb"
		b.snd.sends = []sender.Outcome{{Class: sender.Succeeded, Attempted: true, Status: 200}}
		// A wait past MaxCallbackDefer is not waited out in vain.
		b.snd.posts = []sender.Outcome{heldByLimits(worker.DefaultMaxCallbackDefer + time.Second)}
		r := acked(t, b, b.handle(t.Context(), queue.Delivery{}), true, "", 1)
		if cb := r.Callback; cb == nil || cb.OK || cb.Attempts != 0 || !strings.Contains(cb.Error, "not admitted by its host's limits within 2m0s") {
			t.Errorf("callback %+v: want failed, nothing sent, saying why", cb)
		}
	})
	t.Run("CallbackTurnedAwayByBreakerSpendsTries", func(t *testing.T) {
		b := setup(t)
		b.job.Callback = "https://hooks.example.com/cb"
		b.snd.sends = []sender.Outcome{{Class: sender.Succeeded, Attempted: true, Status: 200}}
		open := sender.Outcome{Class: sender.Postponed, RetryAfter: time.Millisecond,
			Err: fmt.Errorf("not sent: %w", &sender.BreakerOpenError{Host: "hooks.example.com:443", State: job.BreakerOpen})}
		for range b.cfg.MaxAttempts {
			b.snd.posts = append(b.snd.posts, open)
		}
		r := acked(t, b, b.handle(t.Context(), queue.Delivery{}), true, "", 1)
		if cb := r.Callback; cb == nil || cb.OK || cb.Attempts != 0 || len(b.snd.posted) != b.cfg.MaxAttempts {
			t.Errorf("callback %+v after %d POSTs; want failed after %d tries", cb, len(b.snd.posted), b.cfg.MaxAttempts)
		}
	})
}
