package queue

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Batch control, the client half: pause, resume and cancel change a
// batch's entry (the source of truth workers watch), pause or delete the
// batch's consumer on the server (so no worker is handed its jobs while the
// watch lags), then fence: a core NATS request every worker answers once it
// has applied the new state, so the command returns when the fleet has
// stopped sending, not when the watch happens to catch up.

// FenceReply is one worker's answer to a fence.
type FenceReply = batchFenceReply

// BatchFenceSubject is where fences are requested (core NATS, many
// replies).
func (n Names) BatchFenceSubject() string { return n.batchControlSubject() }

// Fence defaults.
const (
	// DefaultFenceWindow: how long replies are collected when no worker is
	// known to be running (the limits board is empty or unreadable).
	DefaultFenceWindow = time.Second
	// DefaultFenceMax bounds the wait for workers known to be running.
	DefaultFenceMax = 3 * time.Second
	// DefaultFenceGrace: replies are collected at least this long, for
	// workers not on the board yet.
	DefaultFenceGrace = 100 * time.Millisecond
	// pauseForever is how long a paused consumer stays paused: until
	// resumed, in practice.
	pauseForever = 10 * 365 * 24 * time.Hour
	// DefaultCancelTimeout bounds cancel's wait for requests in flight.
	DefaultCancelTimeout = 2 * time.Minute
)

// FenceOptions shape one fence.
type FenceOptions struct {
	// Expect names the workers known to be running (their posts on the
	// limits board); the fence ends as soon as each has answered, after
	// Grace, or after Max. Without any it collects for Window.
	Expect             []string
	Window, Max, Grace time.Duration
	// After makes the timers (time.After if nil); tests drive it.
	After func(time.Duration) <-chan time.Time
	// OnReply, if set, hears each valid reply.
	OnReply func(FenceReply)
}

func (o FenceOptions) after(d time.Duration) <-chan time.Time {
	if o.After != nil {
		return o.After(d)
	}
	return time.After(d)
}

// FenceResult is what a fence gathered.
type FenceResult struct {
	Revision uint64        `json:"revision"`
	Replies  []FenceReply  `json:"replies"`
	Missing  []string      `json:"missing,omitempty"` // expected workers that did not answer
	Running  int           `json:"running"`           // the batch's jobs the workers still handle
	Took     time.Duration `json:"-"`
}

// Confirmed is how many workers answered.
func (f FenceResult) Confirmed() int { return len(f.Replies) }

// Fence asks every worker to apply batch's state of revision rev at least
// and collects their answers. A reply for an older revision does not
// count: that worker has not applied the change.
func Fence(ctx context.Context, nc *nats.Conn, n Names, batch string, rev uint64, o FenceOptions) (FenceResult, error) {
	o.Window, o.Max, o.Grace = cmp.Or(o.Window, DefaultFenceWindow), cmp.Or(o.Max, DefaultFenceMax), cmp.Or(o.Grace, DefaultFenceGrace)
	res := FenceResult{Revision: rev}
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return res, fmt.Errorf("fence of batch %s: %w", batch, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(batchFence{Batch: batch, Revision: rev}) // plain fields: cannot fail
	start := time.Now()
	if err := nc.PublishRequest(n.batchControlSubject(), inbox, req); err != nil {
		return res, fmt.Errorf("fence of batch %s: %w", batch, err)
	}
	waiting := map[string]bool{}
	for _, w := range o.Expect {
		waiting[w] = true
	}
	end, grace := o.after(o.Window), o.after(0)
	if len(waiting) > 0 {
		end, grace = o.after(o.Max), o.after(o.Grace)
	}
	seen, graceOver := map[string]bool{}, false
	for {
		select {
		case m := <-replies:
			var r FenceReply
			if json.Unmarshal(m.Data, &r) != nil || r.Revision < rev || seen[r.Worker] {
				continue
			}
			seen[r.Worker] = true
			delete(waiting, r.Worker)
			res.Replies = append(res.Replies, r)
			res.Running += max(r.Running, 0)
			if o.OnReply != nil {
				o.OnReply(r)
			}
			if len(o.Expect) > 0 && len(waiting) == 0 && graceOver {
				return res.done(waiting, start), nil
			}
		case <-grace:
			graceOver, grace = true, nil
			if len(o.Expect) > 0 && len(waiting) == 0 {
				return res.done(waiting, start), nil
			}
		case <-end:
			return res.done(waiting, start), nil
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
}

func (f FenceResult) done(waiting map[string]bool, start time.Time) FenceResult {
	for w := range waiting {
		f.Missing = append(f.Missing, w)
	}
	slices.Sort(f.Missing)
	slices.SortFunc(f.Replies, func(a, b FenceReply) int { return cmp.Compare(a.Worker, b.Worker) })
	f.Took = time.Since(start)
	return f
}

// Control pauses, resumes and cancels batches.
type Control struct {
	js      jetstream.JetStream
	names   Names
	batches *Batches
	// Fence shapes every fence the operations make.
	Fence FenceOptions
	// CancelPoll is how long cancel waits between fences while workers
	// still run the batch's jobs (250ms if 0); Sleep makes the pauses
	// (tests drive it).
	CancelPoll time.Duration
	Sleep      func(context.Context, time.Duration) error
}

// NewControl opens the batches bucket, which must exist (workers and
// enqueue create it); control never creates stores.
func NewControl(ctx context.Context, js jetstream.JetStream, n Names) (*Control, error) {
	b, err := openBatchesReadOnly(ctx, js, n)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		err = fmt.Errorf("%w: workers of a version with batch control create it (start one)", err)
	}
	if err != nil {
		return nil, err
	}
	return &Control{js: js, names: n, batches: b}, nil
}

// openBatchesReadOnly binds the batches bucket without creating it.
func openBatchesReadOnly(ctx context.Context, js jetstream.JetStream, n Names) (*Batches, error) {
	kv, err := js.KeyValue(ctx, n.BatchesBucket())
	if err != nil {
		return nil, fmt.Errorf("batches bucket %s: %w", n.BatchesBucket(), err)
	}
	return &Batches{kv: kv, now: time.Now}, nil
}

// BatchEntry reads batch's entry without creating the bucket: ok is false
// when the batch has none (or the bucket does not exist yet).
func BatchEntry(ctx context.Context, js jetstream.JetStream, n Names, batch string) (c BatchControl, ok bool, err error) {
	b, err := openBatchesReadOnly(ctx, js, n)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return DefaultBatchControl(batch), false, nil
	}
	if err != nil {
		return BatchControl{}, false, err
	}
	c, rev, err := b.Get(ctx, batch)
	return c, rev != 0, err
}

// Batches is the bucket the control writes.
func (c *Control) Batches() *Batches { return c.batches }

// ControlReport says what an operation did.
type ControlReport struct {
	Batch    string     `json:"batch"`
	Action   string     `json:"action"` // pause, resume, cancel
	State    BatchState `json:"state"`
	Priority string     `json:"priority"`
	Weight   int        `json:"weight"`
	Previous BatchState `json:"previous_state"`
	Revision uint64     `json:"revision"`
	// Open counts the batch's jobs on the jobs stream when the operation
	// returned: held (pause), to run (resume), to end with a cancelled
	// result (cancel).
	Open uint64 `json:"open"`
	// Consumer is the batch's consumer; ConsumerFound says whether it
	// existed (workers create it when they next see the batch's jobs).
	Consumer      string      `json:"consumer"`
	ConsumerFound bool        `json:"consumer_found"`
	Fence         FenceResult `json:"fence"`
	// Fences counts the fences made (cancel repeats them until no worker
	// runs the batch's jobs).
	Fences int `json:"fences"`
	// TimedOut: cancel stopped waiting for running jobs at its bound.
	TimedOut bool `json:"timed_out,omitempty"`
	// Warnings say what failed on the way without undoing the change.
	Warnings []string `json:"warnings,omitempty"`
}

// setState writes state into batch's entry and returns the report so far.
func (c *Control) setState(ctx context.Context, batch, action string, state BatchState) (*ControlReport, error) {
	var prev BatchState
	cur, rev, err := c.batches.Update(ctx, batch, func(b *BatchControl) { prev, b.State = b.State, state })
	if err != nil {
		return nil, err
	}
	return &ControlReport{
		Batch: batch, Action: action, State: cur.State, Priority: PriorityName(cur.Weight), Weight: cur.Weight,
		Previous: prev, Revision: rev, Consumer: c.names.BatchConsumer(c.names.JobSubject(batch)),
	}, nil
}

// consumerCall runs a call on the batch's consumer. A consumer that does
// not exist is no error (found is false). Another failure (a server without
// consumer pause, a right the credentials lack) is a warning in the report,
// saying what the batch does without the call: the entry and the fence do
// the work, the consumer's state only backs them up.
func (c *Control) consumerCall(ctx context.Context, rep *ControlReport, what, without string, call func(ctx context.Context) error) (found bool, err error) {
	err = call(ctx)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return false, nil
	case ctx.Err() != nil:
		return false, ctx.Err()
	}
	rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s %s: %v; %s", what, rep.Consumer, err, without))
	return false, nil
}

// Pause stops new sends of batch across the fleet: requests in flight
// finish, jobs fetched but not started are handed back.
func (c *Control) Pause(ctx context.Context, batch string) (*ControlReport, error) {
	// A cancelled batch stays cancelled: pausing it would stop the drain
	// of its cancelled jobs, and a later resume would send them.
	if cur, _, err := c.batches.Get(ctx, batch); err != nil {
		return nil, err
	} else if cur.State == BatchCancelled {
		return nil, fmt.Errorf("batch %s is cancelled: pausing it would keep its open jobs from their cancelled results (enqueue resume %s runs them again)", batch, batch)
	}
	rep, err := c.setState(ctx, batch, "pause", BatchPaused)
	if err != nil {
		return nil, err
	}
	if err := c.pauseConsumer(ctx, rep); err != nil {
		return rep, err
	}
	c.settleRace(ctx, rep)
	if err := c.fenceOnce(ctx, rep); err != nil {
		return rep, err
	}
	return rep, c.countOpen(ctx, rep)
}

// Resume lets batch run again (a cancelled one too: its jobs already
// cancelled keep their result, the open ones run).
func (c *Control) Resume(ctx context.Context, batch string) (*ControlReport, error) {
	rep, err := c.setState(ctx, batch, "resume", BatchRunning)
	if err != nil {
		return nil, err
	}
	rep.ConsumerFound, err = c.consumerCall(ctx, rep, "resuming consumer", "workers resume it when they see the batch run", func(ctx context.Context) error {
		_, err := c.js.ResumeConsumer(ctx, c.names.JobsStream(), rep.Consumer)
		return err
	})
	if err != nil {
		return rep, err
	}
	c.settleRace(ctx, rep)
	// The jobs open as it resumes are those to run.
	if err := c.countOpen(ctx, rep); err != nil {
		return rep, err
	}
	return rep, c.fenceOnce(ctx, rep)
}

// settleRace brings the batch's consumer to the entry's latest state when
// another pause or resume wrote the entry after this one: their consumer
// calls may have landed in the other order, leaving a running batch's
// consumer paused.
func (c *Control) settleRace(ctx context.Context, rep *ControlReport) {
	cur, rev, err := c.batches.Get(ctx, rep.Batch)
	if err != nil || rev == rep.Revision {
		return
	}
	if cur.State == BatchPaused {
		_ = c.pauseConsumer(ctx, &ControlReport{Batch: rep.Batch, Consumer: rep.Consumer})
		return
	}
	c.unpause(rep)
}

// unpause resumes the batch's consumer, even when ctx has ended (a cancel
// interrupted half way must not leave it paused: workers drain a cancelled
// batch through it).
func (c *Control) unpause(rep *ControlReport) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCallTimeout)
	defer cancel()
	_, _ = c.consumerCall(ctx, rep, "resuming consumer", "workers resume it when they next see the batch", func(ctx context.Context) error {
		_, err := c.js.ResumeConsumer(ctx, c.names.JobsStream(), rep.Consumer)
		return err
	})
}

func (c *Control) pauseConsumer(ctx context.Context, rep *ControlReport) error {
	var err error
	rep.ConsumerFound, err = c.consumerCall(ctx, rep, "pausing consumer", "the workers hold the batch by its state alone", func(ctx context.Context) error {
		_, err := c.js.PauseConsumer(ctx, c.names.JobsStream(), rep.Consumer, time.Now().Add(pauseForever))
		return err
	})
	return err
}

func (c *Control) fenceOnce(ctx context.Context, rep *ControlReport) error {
	f, err := Fence(ctx, c.js.Conn(), c.names, rep.Batch, rep.Revision, c.Fence)
	rep.Fence, rep.Fences = f, rep.Fences+1
	return err
}

func (c *Control) countOpen(ctx context.Context, rep *ControlReport) error {
	open, err := OpenJobs(ctx, c.js, c.names, rep.Batch)
	rep.Open = open
	return err
}

// OpenJobs counts batch's jobs on the jobs stream (waiting, deferred or in
// flight).
func OpenJobs(ctx context.Context, js jetstream.JetStream, n Names, batch string) (uint64, error) {
	st, err := js.Stream(ctx, n.JobsStream())
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", n.JobsStream(), err)
	}
	subject := n.JobSubject(batch)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", n.JobsStream(), err)
	}
	return info.State.Subjects[subject], nil
}

// CancelOptions shape a cancel.
type CancelOptions struct {
	// Timeout bounds the wait for the batch's running jobs (requests in
	// flight) to finish.
	Timeout time.Duration
	// OnWait hears each fence that found jobs still running.
	OnWait func(FenceResult)
}

// Cancel ends batch: no request of it is sent once Cancel returns, and
// workers end every open job with a result of reason cancelled. It fences
// until no worker runs one of the batch's jobs (or opts.Timeout), then
// deletes the batch's consumer, which drops the delays of deferred jobs:
// workers create it again and drain it with cancelled results.
func (c *Control) Cancel(ctx context.Context, batch string, opts CancelOptions) (*ControlReport, error) {
	rep, err := c.setState(ctx, batch, "cancel", BatchCancelled)
	if err != nil {
		return nil, err
	}
	deleted := false
	defer func() {
		if !deleted {
			// Workers drain the cancelled batch through its consumer;
			// jobs still running stay with their workers.
			c.unpause(rep)
		}
	}()
	if err := c.pauseConsumer(ctx, rep); err != nil {
		return rep, err
	}
	// The jobs open now end with a cancelled result, but for those running.
	if err := c.countOpen(ctx, rep); err != nil {
		return rep, err
	}
	if err := c.fenceUntilIdle(ctx, rep, opts); err != nil || rep.TimedOut {
		// A job still running would be delivered again by a new consumer
		// and stored as cancelled before its real result: keep this one.
		return rep, err
	}
	deleted, err = c.consumerCall(ctx, rep, "deleting consumer", "jobs waiting out a retry delay are cancelled when it ends", func(ctx context.Context) error {
		return c.js.DeleteConsumer(ctx, c.names.JobsStream(), rep.Consumer)
	})
	return rep, err
}

// fenceUntilIdle fences until no answering worker runs one of the batch's
// jobs, or until opts.Timeout (rep.TimedOut). Later fences wait for the
// workers that answered the first, not again for those that did not
// (stopped, most likely); those stay in the report's Missing.
func (c *Control) fenceUntilIdle(ctx context.Context, rep *ControlReport, opts CancelOptions) error {
	bound := c.Fence.after(cmp.Or(opts.Timeout, DefaultCancelTimeout))
	fence, missing := c.Fence, []string(nil)
	defer func() { rep.Fence.Missing = append(rep.Fence.Missing, missing...) }()
	for {
		f, err := Fence(ctx, c.js.Conn(), c.names, rep.Batch, rep.Revision, fence)
		rep.Fence, rep.Fences = f, rep.Fences+1
		if err != nil || f.Running == 0 {
			return err
		}
		if rep.Fences == 1 && len(fence.Expect) > 0 {
			missing, fence.Expect = f.Missing, nil
			for _, r := range f.Replies {
				fence.Expect = append(fence.Expect, r.Worker)
			}
		}
		if opts.OnWait != nil {
			opts.OnWait(f)
		}
		select {
		case <-bound:
			rep.TimedOut = true
			return nil
		default:
		}
		if err := c.sleep(ctx, cmp.Or(c.CancelPoll, 250*time.Millisecond)); err != nil {
			return err
		}
	}
}

func (c *Control) sleep(ctx context.Context, d time.Duration) error {
	if c.Sleep != nil {
		return c.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitNoOpen waits until batch has no job on the jobs stream, polling
// every poll; progress hears each count.
func WaitNoOpen(ctx context.Context, js jetstream.JetStream, n Names, batch string, poll time.Duration, progress func(uint64)) error {
	for {
		open, err := OpenJobs(ctx, js, n, batch)
		if err != nil {
			return err
		}
		if progress != nil {
			progress(open)
		}
		if open == 0 {
			return nil
		}
		t := time.NewTimer(poll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}
