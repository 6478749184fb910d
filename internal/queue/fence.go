package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetpost/jetpost/pkg/job"
)

// Batch states on the worker. A lane applies its batch's state from the
// batches view, or at once from a fence (enqueue pause/resume/cancel asks
// every worker on <prefix>.fleet.batch and waits for the replies):
//
//	paused     not pulled; fetched jobs not started are handed back; the
//	           check before each request hands a job back unspent
//	cancelled  drained outside the places: every job is settled with a
//	           result of reason cancelled (no request, no dead letter)
//	running    pulled in its share

// fenceWait bounds how long a fence reply waits for the hand-backs and
// cancellations it started.
const fenceWait = 2 * time.Second

// entries is a copy of the view's entries with their revisions.
func (v *BatchView) entries() map[string]entryAt {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]entryAt, len(v.m))
	for k, e := range v.m {
		out[k] = e
	}
	return out
}

// getAt is batch's entry and revision (the default and 0 if none), and
// the latest revision the view applied.
func (v *BatchView) getAt(batch string) (BatchControl, uint64, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.m[batch]; ok {
		return e.c, e.rev, v.rev
	}
	return DefaultBatchControl(batch), 0, v.rev
}

// control is batch's entry as this worker knows it: the view's, or a newer
// one a fence read.
func (c *Consumer) control(batch string) BatchControl {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if c.view == nil {
		return DefaultBatchControl(batch)
	}
	vc, _, seen := c.view.getAt(batch)
	if f, ok := c.fenced[batch]; ok {
		if f.rev > seen {
			return f.c
		}
		delete(c.fenced, batch) // the view caught up
	}
	return vc
}

// applyControls brings every lane to its batch's entry (the view changed).
func (c *Consumer) applyControls() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lanes {
		c.applyLocked(l, c.control(l.batch))
	}
}

// applyLocked moves a lane to ctl. Leaving running, its fetched jobs are
// handed back (paused) or cancelled.
func (c *Consumer) applyLocked(l *lane, ctl BatchControl) {
	from := l.ctl.State
	l.ctl = ctl
	if from == ctl.State || c.stopping {
		return
	}
	l.setHalt()
	if l.cancelPull != nil {
		l.cancelPull() // a long pull of the old state
	}
	c.unreadyLocked(l)
	fate := handBack
	if ctl.State == BatchCancelled {
		fate = cancelIt
	}
	for _, d := range l.takeReady() {
		c.spawnLocked(c.work, d, fate)
	}
	l.cold, l.idle = false, true
	if ctl.State != BatchPaused && l.cons != nil {
		// enqueue resumes the server's pause too; resuming again is
		// harmless, and covers a resume that stopped half way, or a
		// cancel that paused the consumer and never deleted it (its
		// cancelled jobs must still be drained).
		name := l.name
		c.handlers.Add(1)
		go func() {
			defer c.handlers.Done()
			ctx, cancel := context.WithTimeout(context.Background(), DefaultCallTimeout)
			defer cancel()
			_, _ = c.stream.ResumeConsumer(ctx, name)
		}()
	}
	c.readyLocked(l)
}

// answerFences replies to fence requests until the returned stop is called.
func (c *Consumer) answerFences(ctx context.Context) (stop func(), err error) {
	sub, err := c.js.Conn().Subscribe(c.names.batchControlSubject(), func(m *nats.Msg) {
		go c.answerFence(ctx, m)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", c.names.batchControlSubject(), err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// answerFence applies the fenced batch's state of at least the asked
// revision, waits (bounded) for the hand-backs and cancellations that
// started, and replies how many of the batch's jobs are still in a place.
func (c *Consumer) answerFence(ctx context.Context, m *nats.Msg) {
	var req batchFence
	if json.Unmarshal(m.Data, &req) != nil || !job.ValidBatch(req.Batch) {
		return
	}
	rev, err := c.fence(ctx, req)
	if err != nil {
		c.log.Warn().Err(err).Str("batch", req.Batch).Msg("reading a fenced batch's state failed; not answering")
		return
	}
	subject := c.names.JobSubject(req.Batch)
	deadline := time.Now().Add(fenceWait)
	for {
		c.mu.Lock()
		held, running := 0, 0
		if l := c.lanes[subject]; l != nil {
			held, running = l.out-l.placed, l.placed
		}
		c.mu.Unlock()
		// Deliveries not placed (handed back, cancelled) send nothing;
		// wait a little for them to settle so the reply is complete.
		// Placed ones, until settled, are Running: their requests may
		// be under way, and their acks must reach the consumer before
		// a cancel deletes it.
		if held == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			b, _ := json.Marshal(batchFenceReply{Worker: c.cfg.Worker, Revision: rev, Running: running})
			if err := m.Respond(b); err != nil {
				c.log.Warn().Err(err).Msg("answering a batch fence failed")
			}
			return
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// fence makes the batch's state of at least req.Revision this worker's,
// reading it from the bucket if the view lags, and applies it to the lane.
// It returns the revision applied.
func (c *Consumer) fence(ctx context.Context, req batchFence) (uint64, error) {
	c.ctl.Lock()
	_, _, seen := c.view.getAt(req.Batch)
	c.ctl.Unlock()
	rev := seen
	if seen < req.Revision {
		gctx, cancel := context.WithTimeout(ctx, DefaultCallTimeout)
		ctl, krev, err := c.batches.Get(gctx, req.Batch)
		cancel()
		if err != nil {
			return 0, err
		}
		rev = max(krev, req.Revision)
		c.ctl.Lock()
		if f, ok := c.fenced[req.Batch]; !ok || f.rev < rev {
			c.fenced[req.Batch] = entryAt{ctl, rev}
		}
		c.ctl.Unlock()
	}
	c.mu.Lock()
	if l := c.lanes[c.names.JobSubject(req.Batch)]; l != nil {
		c.applyLocked(l, c.control(req.Batch))
	}
	c.mu.Unlock()
	c.signal()
	return rev, nil
}

// CancelledResult is the result of a job of a cancelled batch: failed,
// reason cancelled, nothing sent by this delivery.
func CancelledResult(j *job.Job, attempts int, worker string, now time.Time) *job.Result {
	return &job.Result{
		ID: j.ID, Batch: j.Batch, Method: j.Method, URL: job.RedactURL(j.RequestURL()), Source: j.Source,
		Attempts: attempts, Worker: worker, FinishedAt: now.UTC(),
		Reason: job.ReasonCancelled, Error: "cancelled: its batch was cancelled before it was sent",
	}
}

// cancelHandler settles a cancelled lane's delivery without a request. A
// re-driven callback is not posted: it gets a new dead letter, from which
// it can be re-driven again.
func (c *Consumer) cancelHandler(_ context.Context, d *Delivery) Decision {
	return CancelledDecision(d, c.cfg.Worker, c.now())
}

// CancelledDecision settles a delivery of a cancelled batch without a
// request: a job's cancelled result, or a re-driven callback's result as it
// stands with a callback that was not sent again. The queue's drain and the
// worker's check before a request both decide with it.
func CancelledDecision(d *Delivery, worker string, now time.Time) Decision {
	if d.Job.Kind == job.KindCallback {
		r := *d.Job.Result
		r.Callback = &job.CallbackResult{Error: "cancelled: its batch was cancelled before the callback was sent again"}
		return Decision{Action: AckWithResult, Result: &r}
	}
	return Decision{Action: AckWithResult, Result: CancelledResult(d.Job, d.Attempts, worker, now)}
}
