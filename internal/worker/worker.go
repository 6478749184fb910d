package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/tracing"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/retry"
	"github.com/jetpost/jetpost/pkg/sender"
)

// Sender sends one attempt of a job, or a callback POST.
type Sender interface {
	// SendUntil is one attempt; halt, when it ends before the request
	// starts (its batch was paused or cancelled while the job waited for
	// its host), stops it with sender.ErrHalted.
	SendUntil(ctx context.Context, j *job.Job, halt context.Context) sender.Outcome
	Post(ctx context.Context, cb sender.Callback) sender.Outcome
}

// Config is the retry policy and identity of a worker.
type Config struct {
	ID          string
	MaxAttempts int
	Backoff     sender.Backoff
	MaxJobAge   time.Duration
	// MaxCallbackDefer bounds how long a callback may wait for its host's
	// limits to admit it (waits that spend no try); past it, the callback
	// fails. Default DefaultMaxCallbackDefer.
	MaxCallbackDefer time.Duration
	// MaxCallbacksWaiting is how many callbacks to one host may wait at
	// once for its limits, each holding its job's handler; a job whose
	// callback host has that many is deferred before its request.
	// Default DefaultMaxCallbacksWaiting.
	MaxCallbacksWaiting int
	// Tracer, if set, traces each delivery and callback; nil: off.
	Tracer *tracing.Tracer
}

// DefaultMaxCallbackDefer is as long as the host limits defer one refused
// request at most (hostlimit.DefaultMaxDefer), so that a callback is never
// given up on before its host has had one turn.
const DefaultMaxCallbackDefer = 2 * time.Minute

// DefaultMaxCallbacksWaiting keeps a callback host with a backlog busy
// (its limits answer the next few at once) while leaving the handlers to
// other jobs.
const DefaultMaxCallbacksWaiting = 4

// Observer is told what the worker does, for metrics. Every method must be
// cheap and safe for concurrent use; nil fields are skipped.
type Observer struct {
	Attempt  func(host string, o *sender.Outcome)
	Finished func(r *job.Result)
	// Deferred is told of every job sent back with a delay: NakAfterAttempt
	// or NakAfter.
	Deferred func(host string, a queue.Action)
	// InFlight is told +1 when a job starts and -1 when its decision is made.
	InFlight func(delta int)
	// Sent is told the batch of every request sent to a job's target.
	Sent func(batch string)
}

// Worker decides, for each delivery, what to send and what happens next.
type Worker struct {
	cfg  Config
	send Sender
	log  zerolog.Logger
	obs  Observer
	now  func() time.Time
	rnd  func() float64
	// cbHosts: callbacks waiting for their hosts' limits.
	cbHosts callbackHosts
}

// New returns a Worker. obs may be the zero Observer.
func New(cfg Config, s Sender, obs Observer, log zerolog.Logger) *Worker {
	if cfg.MaxAttempts < 1 {
		cfg.MaxAttempts = 1
	}
	if cfg.MaxCallbackDefer <= 0 {
		cfg.MaxCallbackDefer = DefaultMaxCallbackDefer
	}
	if cfg.MaxCallbacksWaiting <= 0 {
		cfg.MaxCallbacksWaiting = DefaultMaxCallbacksWaiting
	}
	return &Worker{cfg: cfg, send: s, log: log, obs: obs, now: time.Now, rnd: rand.Float64}
}

// Handle is a queue.Handler: one HTTP attempt, then the one decision that
// follows from its outcome.
func (w *Worker) Handle(ctx context.Context, d *queue.Delivery) queue.Decision {
	if w.cfg.Tracer != nil {
		return w.handleTraced(ctx, d)
	}
	return w.handle(ctx, d)
}

func (w *Worker) handle(ctx context.Context, d *queue.Delivery) queue.Decision {
	if w.obs.InFlight != nil {
		w.obs.InFlight(1)
		defer w.obs.InFlight(-1)
	}
	j := d.Job
	host := j.Host()
	log := jobLog{l: &w.log, j: j, host: host}
	if j.Kind == job.KindCallback {
		return w.resendCallback(ctx, log, d)
	}
	// First: a stopped batch sends nothing, not even an expired job's
	// callback.
	if dec, ok := w.batchStopped(log, d); ok {
		return dec
	}

	if w.cfg.MaxJobAge > 0 && !j.EnqueuedAt.IsZero() && w.now().Sub(j.EnqueuedAt) > w.cfg.MaxJobAge {
		r := w.result(j, d.Attempts, nil)
		r.Reason = job.ReasonExpired
		r.Error = "expired: not done within the maximum job age of " + w.cfg.MaxJobAge.String()
		return w.complete(ctx, log, j, r)
	}
	if dec, ok := w.deferForCallback(log, j); ok {
		return dec
	}
	// Again right before the request: the batch may have stopped while the
	// job waited for its callback host.
	if dec, ok := w.batchStopped(log, d); ok {
		return dec
	}
	o := w.send.SendUntil(ctx, j, d.Halt())
	if o.Class == sender.Postponed && errors.Is(o.Err, sender.ErrHalted) {
		if dec, ok := w.batchStopped(log, d); ok {
			return dec
		}
		return queue.Decision{Action: queue.HandBack} // running again already
	}
	if w.obs.Sent != nil && o.Attempted {
		w.obs.Sent(j.Batch)
	}
	if ctx.Err() != nil && o.Class != sender.Succeeded {
		// Shutdown cut the request short: hand the job back unspent; it is
		// not the target's failure.
		log.Debug().Msg("handing job back at shutdown")
		return queue.Decision{Action: queue.HandBack}
	}
	attempts := d.Attempts
	if o.Attempted {
		attempts++
	}
	if w.obs.Attempt != nil {
		w.obs.Attempt(host, &o)
	}

	switch o.Class {
	case sender.Succeeded:
		return w.complete(ctx, log, j, w.result(j, attempts, &o))
	case sender.Permanent:
		r := w.result(j, attempts, &o)
		r.Reason = job.ReasonPermanent
		var refused *sender.RefusedError
		if errors.As(o.Err, &refused) {
			r.Reason = job.ReasonRefused
		}
		return w.complete(ctx, log, j, r)
	case sender.Postponed:
		var open *sender.BreakerOpenError
		if errors.As(o.Err, &open) {
			return w.turnedAway(ctx, log, d, &o)
		}
		// A full host (limits) only asks the job to wait; capacity, not
		// failures, bounds that wait.
		if w.obs.Deferred != nil {
			w.obs.Deferred(host, queue.NakAfter)
		}
		log.Debug().Dur("delay", o.RetryAfter).Err(o.Err).Msg("deferred: nothing sent (host limit reached or no free place)")
		return queue.Decision{Action: queue.NakAfter, Delay: o.RetryAfter, OwnCapacity: sender.OwnCapacity(o.Err)}
	default: // sender.Retryable
		if tries := attempts + d.TurnedAway; tries >= w.cfg.MaxAttempts {
			r := w.result(j, attempts, &o)
			w.spent(r, d.TurnedAway)
			return w.complete(ctx, log, j, r)
		}
		delay := o.RetryAfter
		if delay <= 0 {
			delay = w.cfg.Backoff.Delay(attempts+d.TurnedAway, w.rnd)
		}
		if w.obs.Deferred != nil {
			w.obs.Deferred(host, queue.NakAfterAttempt)
		}
		log.Debug().Int("attempts", attempts).Int("status", o.Status).Err(o.Err).Dur("delay", delay).Msg("retrying later")
		return queue.Decision{Action: queue.NakAfterAttempt, Delay: delay, Attempts: attempts, TurnedAway: d.TurnedAway}
	}
}

// batchStopped is the check right before a request: a job of a paused
// batch is handed back without spending an attempt (its lane is not
// pulled until the batch resumes); one of a cancelled batch ends with a
// cancelled result, sending nothing, not even its callback.
func (w *Worker) batchStopped(log jobLog, d *queue.Delivery) (queue.Decision, bool) {
	if h := d.Halt(); h != nil {
		select {
		case <-h.Done():
		default:
			return queue.Decision{}, false // running since its place was given: no lock taken
		}
	}
	switch d.BatchState() {
	case queue.BatchPaused:
		log.Debug().Msg("batch paused: handed back before its request")
		return queue.Decision{Action: queue.HandBack}, true
	case queue.BatchCancelled:
		dec := queue.CancelledDecision(d, w.cfg.ID, w.now())
		if w.obs.Finished != nil {
			w.obs.Finished(dec.Result)
		}
		log.Debug().Msg("batch cancelled: settled before its request")
		return dec, true
	}
	return queue.Decision{}, false
}

// turnedAway decides for a job its host's open breaker refused. The
// turn-away spends a try of the retry budget (not an attempt: nothing was
// sent), so a job never waits on a breaker much longer than its retry
// schedule would have taken: it comes back after its backoff for that try,
// or when the breaker lets a probe through if that is sooner, and fails
// once its tries are spent.
func (w *Worker) turnedAway(ctx context.Context, log jobLog, d *queue.Delivery, o *sender.Outcome) queue.Decision {
	turned := d.TurnedAway + 1
	if d.Attempts+turned >= w.cfg.MaxAttempts {
		r := w.result(d.Job, d.Attempts, nil)
		r.Error = o.Err.Error()
		w.spent(r, turned)
		return w.complete(ctx, log, d.Job, r)
	}
	delay := min(w.cfg.Backoff.Delay(d.Attempts+turned, w.rnd), o.RetryAfter)
	if w.obs.Deferred != nil {
		w.obs.Deferred(log.host, queue.NakAfter)
	}
	log.Debug().Int("turned_away", turned).Dur("delay", delay).Err(o.Err).Msg("turned away by the host's breaker; a try is spent")
	return queue.Decision{Action: queue.NakAfter, Delay: delay, Attempts: d.Attempts, TurnedAway: turned}
}

// spent sets the reason of a job whose tries are all spent: breaker_open
// when the breaker took any of them, since without it the job would have
// had more requests; exhausted otherwise.
func (w *Worker) spent(r *job.Result, turned int) {
	r.Reason = job.ReasonExhausted
	if turned > 0 {
		r.Reason = job.ReasonBreakerOpen
		r.Error = fmt.Sprintf("%s; %d of its tries turned away by the host's open circuit breaker, %d sent", r.Error, turned, r.Attempts)
	}
}

// result builds the record for a finished job; o is nil when no attempt was
// made in this delivery.
func (w *Worker) result(j *job.Job, attempts int, o *sender.Outcome) *job.Result {
	r := &job.Result{
		ID: j.ID, Batch: j.Batch, Method: j.Method, URL: job.RedactURL(j.RequestURL()), Source: j.Source,
		Attempts: attempts, Worker: w.cfg.ID, FinishedAt: w.now().UTC(),
	}
	if o != nil {
		r.OK = o.Class == sender.Succeeded
		r.Status = o.Status
		r.Body = string(o.Body)
		r.BodyTruncated = o.BodyTruncated
		r.DurationMS = o.Duration.Milliseconds()
		if o.Err != nil {
			r.Error = o.Err.Error()
		}
	}
	return r
}

// complete POSTs the result to the job's callback, if any, records how that
// went, and returns the decision to store it. A callback that finally
// failed leaves the result as it is and gets a dead letter of its own
// (queue), from which it alone can be re-driven.
func (w *Worker) complete(ctx context.Context, log jobLog, j *job.Job, r *job.Result) queue.Decision {
	if j.Callback != "" {
		r.Callback = w.tracedCallback(ctx, j, r)
	}
	if w.obs.Finished != nil {
		w.obs.Finished(r)
	}
	ev := log.Debug()
	if !r.OK {
		ev = log.Info()
	}
	ev.Bool("ok", r.OK).Int("status", r.Status).Int("attempts", r.Attempts).Str("reason", string(r.Reason)).Str("error", r.Error).Msg("job finished")
	return queue.Decision{Action: queue.AckWithResult, Result: r}
}

// callback POSTs the result through the same sender (guard, host limits,
// breaker, classification), retrying retryable failures with the job's
// backoff policy. It runs before the result is stored so its outcome is
// part of the record; the retries are bounded (attempts, and each wait
// capped at maxCallbackWait) because the job holds its slot meanwhile. A
// POST its host's limits turn away waits as long as they ask, spending no
// try, as a job's deferral spends no attempt; those waits together are
// bounded by MaxCallbackDefer, so every callback ends.
func (w *Worker) callback(ctx context.Context, j *job.Job, r *job.Result) *job.CallbackResult {
	body, err := json.Marshal(r)
	if err != nil {
		return &job.CallbackResult{Error: err.Error()}
	}
	cb := sender.Callback{URL: j.Callback, Body: body, Key: j.CallbackKey(), Batch: j.Batch, BatchRate: j.Rate}
	cr := &job.CallbackResult{}
	deferUntil := w.now().Add(w.cfg.MaxCallbackDefer)
	host, waited := callbackHost(j), false
	defer func() {
		if waited {
			w.cbHosts.done(host)
		}
	}()
	// Tries bound the loop even when an open breaker defers every try
	// without a request.
	for try := 1; ; {
		o := w.send.Post(ctx, cb)
		if o.Attempted {
			cr.Attempts++
		}
		cr.OK, cr.Status, cr.Error = o.Class == sender.Succeeded, o.Status, ""
		if o.Err != nil {
			cr.Error = o.Err.Error()
		}
		if o.Class == sender.Succeeded || o.Class == sender.Permanent || ctx.Err() != nil {
			return cr
		}
		var wait time.Duration
		if held(&o) {
			if wait = max(o.RetryAfter, minCallbackDefer); w.now().Add(wait).After(deferUntil) {
				cr.Error = fmt.Sprintf("not admitted by its host's limits within %v: %s", w.cfg.MaxCallbackDefer, cr.Error)
				return cr
			}
			w.cbHosts.wait(host, w.now().Add(wait), !waited)
			waited = true
		} else {
			if try >= w.cfg.MaxAttempts {
				return cr
			}
			if wait = o.RetryAfter; wait <= 0 {
				wait = w.cfg.Backoff.Delay(try, w.rnd)
			}
			wait, try = min(wait, maxCallbackWait), try+1
		}
		if retry.Sleep(ctx, wait) != nil {
			return cr
		}
	}
}

// deferForCallback defers a job, or a re-driven callback, whose callback
// host has MaxCallbacksWaiting callbacks waiting for its limits already
// (callbackHosts): it comes back at about the time the latest of them
// was told, spread over as long again, and spends nothing meanwhile.
func (w *Worker) deferForCallback(log jobLog, j *job.Job) (queue.Decision, bool) {
	host := callbackHost(j)
	if host == "" {
		return queue.Decision{}, false
	}
	wait := w.cbHosts.busy(host, w.cfg.MaxCallbacksWaiting, w.now())
	if wait == 0 {
		return queue.Decision{}, false
	}
	delay := wait + time.Duration(w.rnd()*float64(wait))
	if w.obs.Deferred != nil {
		w.obs.Deferred(host, queue.NakAfter)
	}
	log.Debug().Str("callback_host", host).Dur("delay", delay).Msg("deferred: callbacks to its callback's host wait for that host's limits")
	return queue.Decision{Action: queue.NakAfter, Delay: delay}, true
}

// held reports whether o is a request the host limits (or a full worker)
// turned away before sending anything: Postponed for any reason but an open
// breaker, whose turn-aways spend tries so that a dead host's callbacks end.
func held(o *sender.Outcome) bool {
	var open *sender.BreakerOpenError
	return o.Class == sender.Postponed && !errors.As(o.Err, &open)
}

// resendCallback handles a re-driven callback: it POSTs the job's stored
// result again, with the callback's own key, and sends nothing to the job's
// URL. The decision's result says how the callback went; the queue stores
// no second result for the job, only a new dead letter if it failed again.
func (w *Worker) resendCallback(ctx context.Context, log jobLog, d *queue.Delivery) queue.Decision {
	j := d.Job
	switch d.BatchState() { // first: a stopped batch is deferred for no host
	case queue.BatchPaused:
		return queue.Decision{Action: queue.HandBack}
	case queue.BatchCancelled:
		return queue.CancelledDecision(d, w.cfg.ID, w.now())
	}
	if dec, ok := w.deferForCallback(log, j); ok {
		return dec
	}
	r := *j.Result
	// The record as the first POST sent it, before its callback's outcome.
	r.Callback = nil
	cr := w.tracedCallback(ctx, j, &r)
	if !cr.OK && ctx.Err() != nil {
		return queue.Decision{Action: queue.HandBack}
	}
	r.Callback = cr
	// Re-drives are rare and asked for: say how each ended.
	msg := "re-driven callback delivered"
	if !cr.OK {
		msg = "re-driven callback failed again; dead-lettered"
	}
	log.Info().Int("status", cr.Status).Int("attempts", cr.Attempts).Str("error", cr.Error).Msg(msg)
	return queue.Decision{Action: queue.AckWithResult, Result: &r}
}

// maxCallbackWait caps one wait between callback attempts;
// minCallbackDefer keeps a held callback from spinning on a zero wait.
const (
	maxCallbackWait  = 5 * time.Second
	minCallbackDefer = 10 * time.Millisecond
)

// jobLog adds a job's fields to each event it starts. A logger derived with
// With() would copy its context for every job, even when nothing is logged
// at the configured level; an event of a disabled level costs nothing.
type jobLog struct {
	l    *zerolog.Logger
	j    *job.Job
	host string
}

func (jl jobLog) with(ev *zerolog.Event) *zerolog.Event {
	return ev.Str("job", jl.j.ID).Str("batch", jl.j.Batch).Str("host", jl.host)
}

func (jl jobLog) Debug() *zerolog.Event { return jl.with(jl.l.Debug()) }
func (jl jobLog) Info() *zerolog.Event  { return jl.with(jl.l.Info()) }
