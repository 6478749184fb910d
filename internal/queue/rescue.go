package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/retry"
)

// Orphans. A replicated consumer's leader sends a delivery only once its
// followers agree it was made; a leader that dies or steps down in between
// takes the message with it, and its successor counts the job as delivered
// to someone. Left alone, JetStream would send it again only after the
// ack wait. So after a leader change one worker at a time rescues them: it
// asks every worker which jobs it holds or has deferred (the census), and
// NAKs every other job between the consumer's ack floor and its last
// delivery, which JetStream then redelivers at once.

// RescueConfig tunes the rescue of orphaned deliveries; zero values take
// the defaults.
type RescueConfig struct {
	// Grace is the pause between reading the consumer's state and the
	// census, so that deliveries still on their way land first. Default 1s.
	Grace time.Duration
	// Census is how long replies to a census are collected at least.
	// Default 1s.
	Census time.Duration
	// Expected, if set, names the workers known to be running (those on
	// the limits board): the census goes on collecting until each has
	// answered, up to Max, asking again meanwhile. A worker slow to
	// answer (loaded, or reconnecting, which missed the first request)
	// would otherwise have the jobs it is sending NAKed, and sent again
	// by another. One that never answers (killed, its post not stale
	// yet) only delays the rescue.
	Expected func(ctx context.Context) []string
	// Max bounds a census waiting for expected workers. Default 5s.
	Max time.Duration
}

const (
	// deferredMemory is how long a deferred job stays in this worker's
	// census answers after it came due: it may be on its way back. Past
	// that, one nobody holds was lost (its NAK went with a leader).
	deferredMemory = 5 * time.Second
	// followUp is when a rescue runs once more after a leader change, for
	// jobs deferred just before it whose NAK was lost: they are spared
	// until due plus deferredMemory.
	followUp = 15 * time.Second
	// maxRescueSpan bounds the sequences one rescue may NAK.
	maxRescueSpan = 1 << 20
	// rescueLockKey is the attempts bucket's key for the rescue lock;
	// attempt counts are keyed by number, so it cannot collide.
	rescueLockKey = "rescue-lock"
	rescueLockTTL = 30 * time.Second
	// rescueTries is how often a failing rescue is tried before it is
	// reported; it is tried until the worker stops.
	rescueTries = 10
)

// censusSubject is where workers answer which jobs they hold (core NATS,
// not captured by any stream).
func (n Names) censusSubject() string { return n.Prefix + ".fleet.held" }

// censusReply is one worker's answer: the stream sequences it holds or
// has deferred, by lane consumer.
type censusReply struct {
	Worker string              `json:"worker"`
	Busy   map[string][]uint64 `json:"busy"`
}

// holdings are the job messages this worker is responsible for: fetched
// and not yet settled, or deferred (NAKed with a delay) until a due time,
// each with the lane consumer it came from.
type holdings struct {
	mu       sync.Mutex
	held     map[uint64]string
	deferred map[uint64]deferral
	// sweepAt is the size of deferred at which release forgets deferrals
	// long due: most come back to another worker, and without a rescue
	// (busy) nothing else would ever drop them.
	sweepAt int
}

type deferral struct {
	due  time.Time
	lane string
	// last is what this worker knew of the job when it deferred it
	// (recall.go).
	last lastDelivery
}

func newHoldings() *holdings {
	return &holdings{held: map[uint64]string{}, deferred: map[uint64]deferral{}}
}

// hold starts a hold; it returns what this worker knew of the job when it
// deferred it last, if it still remembers.
func (h *holdings) hold(seq uint64, lane string) (lastDelivery, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held[seq] = lane
	d, ok := h.deferred[seq]
	delete(h.deferred, seq)
	return d.last, ok && d.lane == lane
}

// release ends a hold; due, if not zero, is when a deferred job comes back,
// and last what this worker knew of it then (recall.go).
func (h *holdings) release(seq uint64, due time.Time, last lastDelivery) {
	h.mu.Lock()
	lane := h.held[seq]
	delete(h.held, seq)
	if !due.IsZero() {
		h.deferred[seq] = deferral{due, lane, last}
		if len(h.deferred) > h.sweepAt {
			h.forgetDue(time.Now())
			h.sweepAt = 2*len(h.deferred) + 1024
		}
	}
	h.mu.Unlock()
}

// forgetDue drops deferrals long due. h.mu is held.
func (h *holdings) forgetDue(now time.Time) {
	for seq, d := range h.deferred {
		if now.Sub(d.due) > deferredMemory {
			delete(h.deferred, seq)
		}
	}
}

// busy lists what the census must spare, by lane, forgetting deferrals
// long due.
func (h *holdings) busy(now time.Time) map[string][]uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forgetDue(now)
	out := map[string][]uint64{}
	for seq, lane := range h.held {
		out[lane] = append(out[lane], seq)
	}
	for seq, d := range h.deferred {
		out[d.lane] = append(out[d.lane], seq)
	}
	return out
}

// answerCensus replies to census requests until the returned stop is called.
func (c *Consumer) answerCensus() (stop func(), err error) {
	sub, err := c.js.Conn().Subscribe(c.names.censusSubject(), func(m *nats.Msg) {
		if !askedInCensus(m.Data, c.cfg.Worker) {
			return
		}
		b, err := json.Marshal(censusReply{Worker: c.cfg.Worker, Busy: c.holds.busy(c.now())})
		if err == nil {
			err = m.Respond(b)
		}
		if err != nil {
			c.log.Warn().Err(err).Msg("answering a census of held jobs failed")
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", c.names.censusSubject(), err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// censusResult is what a census gathered: the busy sequences by lane
// consumer, and who answered.
type censusResult struct {
	busy    map[string]map[uint64]bool
	workers int
	missing []string // expected workers that did not answer
}

// censusAgain is how often a census still waiting for expected workers
// asks again: a core NATS request reaches only the workers connected when
// it goes out, and one reconnecting after a node's loss missed it.
const censusAgain = 300 * time.Millisecond

// askedInCensus reports whether a census request asks worker: one
// without a body asks every worker, one asked again names those it still
// waits for.
func askedInCensus(body []byte, worker string) bool {
	if len(body) == 0 {
		return true
	}
	var awaited []string
	return json.Unmarshal(body, &awaited) != nil || slices.Contains(awaited, worker)
}

// census collects every worker's busy sequences, by lane, for the
// configured window, and on until every expected worker answered (or the
// configured Max), asking those again every censusAgain meanwhile. A
// worker that answers twice counts once; its answers add up, which only
// spares more.
func (c *Consumer) census(ctx context.Context) (censusResult, error) {
	res := censusResult{busy: map[string]map[uint64]bool{}}
	waiting := map[string]bool{}
	if c.cfg.Rescue.Expected != nil {
		ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
		for _, w := range c.cfg.Rescue.Expected(ectx) {
			waiting[w] = true
		}
		cancel()
	}
	nc := c.js.Conn()
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return res, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	ask := func(body []byte) error { return nc.PublishRequest(c.names.censusSubject(), inbox, body) }
	if err := ask(nil); err != nil {
		return res, err
	}
	window, most := time.NewTimer(c.cfg.Rescue.Census), time.NewTimer(c.cfg.Rescue.Max)
	defer window.Stop()
	defer most.Stop()
	again := time.NewTicker(censusAgain)
	defer again.Stop()
	heard := map[string]bool{}
	windowOver := false
	for {
		select {
		case m := <-replies:
			var r censusReply
			if json.Unmarshal(m.Data, &r) != nil {
				continue
			}
			heard[r.Worker] = true
			delete(waiting, r.Worker)
			for lane, seqs := range r.Busy {
				if res.busy[lane] == nil {
					res.busy[lane] = map[uint64]bool{}
				}
				for _, seq := range seqs {
					res.busy[lane][seq] = true
				}
			}
			if windowOver && len(waiting) == 0 {
				res.workers = len(heard)
				return res, nil
			}
		case <-again.C:
			if len(waiting) > 0 {
				// Only those still awaited answer again.
				body, _ := json.Marshal(slices.Sorted(maps.Keys(waiting))) // strings: cannot fail
				_ = ask(body)                                              // the next tick tries again
			}
		case <-window.C:
			windowOver = true
			if len(waiting) == 0 {
				res.workers = len(heard)
				return res, nil
			}
		case <-most.C:
			for w := range waiting {
				res.missing = append(res.missing, w)
			}
			slices.Sort(res.missing)
			res.workers = len(heard)
			return res, nil
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
}

// rescueSoon starts a rescue unless Run is not running, and a second one
// followUp later unless another sign came meanwhile.
func (c *Consumer) rescueSoon() {
	// The same signs may mean acks were lost too (reack.go).
	c.reackSoon()
	c.inBackground(&c.rescuer, func(ctx context.Context) {
		c.rescueRetrying(ctx)
		if !c.rescuer.pending() && retry.Sleep(ctx, followUp) == nil {
			c.rescueRetrying(ctx)
		}
	})
}

// rescueRetrying runs a rescue, trying again while the cluster is still
// electing leaders.
func (c *Consumer) rescueRetrying(ctx context.Context) {
	var n int
	err := retry.Do(ctx, retry.Policy{
		PerTry: rescueLockTTL,
		Pause:  brokerPause,
		OnRetry: func(err error, try int) {
			if try == rescueTries {
				c.log.Warn().Err(err).Msg("rescuing deliveries lost with a consumer leader failed; they come back after the ack wait")
			}
		},
	}, func(ctx context.Context) (err error) {
		n, err = c.rescue(ctx)
		return err
	})
	if err == nil && n > 0 {
		c.log.Info().Int("naks", n).Msg("NAKed the jobs no worker holds, lost with a consumer leader")
	}
}

// rescue NAKs the orphans of every lane with jobs pending and returns how
// many NAKs it sent (acknowledged jobs among them are ignored by the
// server). One worker at a time rescues: two would each NAK the other's
// rescued jobs, and a job redelivered twice may be sent twice.
//
// Only deliveries made before the consumers' states are read are
// candidates, and the census waits a grace period after that read: a job
// delivered before it has reached its worker by then, unless it was lost.
func (c *Consumer) rescue(ctx context.Context) (int, error) {
	// Within the lock's lifetime, or another worker could take it over.
	ctx, cancel := context.WithTimeout(ctx, rescueLockTTL)
	defer cancel()
	unlock, err := c.lockRescue(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	pending, err := c.pendingLanes(ctx)
	if err != nil || len(pending) == 0 {
		return 0, err
	}
	if err := retry.Sleep(ctx, c.cfg.Rescue.Grace); err != nil {
		return 0, err
	}
	cen, err := c.census(ctx)
	if err != nil {
		return 0, fmt.Errorf("census of held jobs: %w", err)
	}
	busy := cen.busy
	total := 0
	for name, info := range pending {
		from, to := info.AckFloor.Stream+1, info.Delivered.Stream
		if to >= from && to-from >= maxRescueSpan {
			from = to - maxRescueSpan + 1
		}
		spared := 0
		for seq := range busy[name] {
			if seq >= from && seq <= to {
				spared++
			}
		}
		c.log.Info().Str("consumer", name).Int("workers", cen.workers).Strs("missing", cen.missing).
			Int("pending", info.NumAckPending).Int("held_or_deferred", spared).
			Uint64("from", from).Uint64("to", to).Msg("census after a consumer leader change")
		if info.NumAckPending-spared <= 0 {
			continue
		}
		n, err := c.nakUnheld(ctx, name, from, to, info.Delivered.Consumer, busy[name])
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// pendingLanes reads the state of every lane's consumer and returns those
// with deliveries pending, by consumer name.
func (c *Consumer) pendingLanes(ctx context.Context) (map[string]*jetstream.ConsumerInfo, error) {
	c.mu.Lock()
	var conss []jetstream.Consumer
	for _, l := range c.lanes {
		if l.cons != nil {
			conss = append(conss, l.cons)
		}
	}
	c.mu.Unlock()
	out := map[string]*jetstream.ConsumerInfo{}
	for _, cons := range conss {
		ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := cons.Info(ictx)
		icancel()
		if IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("consumer info: %w", err)
		}
		if info.NumAckPending > 0 {
			out[info.Name] = info
		}
	}
	return out, nil
}

// nakUnheld NAKs every sequence from..to that busy does not name on the
// lane consumer name. A NAK for a sequence that is not pending there
// (acknowledged meanwhile, or another batch's) is ignored by the server;
// the delivery sequence only has to be in the consumer's range.
func (c *Consumer) nakUnheld(ctx context.Context, name string, from, to, dseq uint64, busy map[uint64]bool) (int, error) {
	nc := c.js.Conn()
	n := 0
	prefix := "$JS.ACK." + c.names.JobsStream() + "." + name + ".1."
	suffix := "." + strconv.FormatUint(dseq, 10) + ".0.0"
	for seq := from; seq <= to; seq++ {
		if busy[seq] {
			continue
		}
		if err := nc.Publish(prefix+strconv.FormatUint(seq, 10)+suffix, []byte("-NAK")); err != nil {
			return n, err
		}
		n++
	}
	return n, nc.FlushWithContext(ctx)
}

// errRescueBusy means another worker is rescuing; this one tries again
// after it (its census may predate this worker's sign of a leader change).
var errRescueBusy = errors.New("another worker is rescuing")

// lockRescue takes the fleet's rescue lock in the attempts bucket. A lock
// older than rescueLockTTL was left by a worker that died and is taken over.
func (c *Consumer) lockRescue(ctx context.Context) (func(), error) {
	now := c.now()
	stamp := []byte(now.UTC().Format(time.RFC3339Nano))
	var rev uint64
	e, err := c.kv.Get(ctx, rescueLockKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err = c.kv.Create(ctx, rescueLockKey, stamp)
	case err != nil:
		return nil, err
	default:
		if at, perr := time.Parse(time.RFC3339Nano, string(e.Value())); perr == nil && now.Sub(at) < rescueLockTTL {
			return nil, errRescueBusy
		}
		rev, err = c.kv.Update(ctx, rescueLockKey, stamp, e.Revision())
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, errRescueBusy // another worker won the race
	}
	if err != nil {
		return nil, fmt.Errorf("rescue lock: %w", err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = c.kv.Delete(ctx, rescueLockKey, jetstream.LastRevision(rev))
	}, nil
}
