package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetpost/jetpost/pkg/retry"
)

// Acks sent again. The ack of a job whose result and completion marker are
// stored is not confirmed (ackStored): one lost with a consumer leader
// that died, or in a connection to a server that went, would leave its job
// pending until the ack wait. So a worker remembers the last acks it sent
// that way and sends them again when its consumers may have lost some:
// when JetStream announces that a lane's consumer elected a new leader,
// when its connection comes back, and on every other sign that starts a
// rescue. Each sign sends them now and twice more over the next seconds,
// since the sign may come before the new leader is there to take them.
//
// Sending an ack again is safe where a NAK is not: the job is finished
// (its result and marker are stored), and an ack for a message that is no
// longer pending, or pending with another worker that will settle it from
// its marker, changes nothing that matters. So this needs no census and no
// lock, and may run on every worker at once.

// reackAfter is when, after a sign, the remembered acks are sent again: at
// once, and after a leader election that may take a few seconds.
var reackAfter = [...]time.Duration{0, 3 * time.Second, 10 * time.Second}

// minRecentAcks is the fewest acks remembered. Only acks sent shortly
// before a leader was lost can be lost with it, and while a consumer has
// no leader it delivers nothing, so a few times what a worker holds at
// once is plenty.
const minRecentAcks = 4096

// recentAcks is a ring of the reply subjects of the last unconfirmed acks.
type recentAcks struct {
	mu    sync.Mutex
	subjs []string
	next  int
}

func newRecentAcks(size int) *recentAcks {
	return &recentAcks{subjs: make([]string, max(size, minRecentAcks))}
}

func (r *recentAcks) add(reply string) {
	r.mu.Lock()
	r.subjs[r.next] = reply
	r.next = (r.next + 1) % len(r.subjs)
	r.mu.Unlock()
}

// all returns the remembered reply subjects.
func (r *recentAcks) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.subjs))
	for _, s := range r.subjs {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// reacker sends the remembered acks again, once per sign, however many
// come together.
type reacker struct {
	running atomic.Bool
	again   atomic.Bool
}

// reackSoon sends the remembered acks again now and over the next seconds
// (reackAfter), unless Run is not running. A sign that comes while they
// are being sent starts the schedule again when it ends.
func (c *Consumer) reackSoon() {
	ctx := c.life
	if ctx == nil || ctx.Err() != nil {
		return
	}
	r := &c.reacker
	r.again.Store(true)
	if !r.running.CompareAndSwap(false, true) {
		return
	}
	c.rescues.Add(1)
	go func() {
		defer c.rescues.Done()
		for {
			for r.again.Swap(false) {
				for _, d := range reackAfter {
					if retry.Sleep(ctx, d) != nil {
						r.running.Store(false)
						return
					}
					c.reack()
				}
			}
			r.running.Store(false)
			// A sign that came as this loop ended found it still running.
			if !r.again.Load() || ctx.Err() != nil || !r.running.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

// reack publishes every remembered ack again.
func (c *Consumer) reack() {
	nc := c.js.Conn()
	subjs := c.acks.all()
	for _, s := range subjs {
		if err := nc.Publish(s, ackBody); err != nil {
			c.log.Debug().Err(err).Msg("sending acks again failed; the rescue or the ack wait settles their jobs")
			return
		}
	}
	if len(subjs) > 0 {
		c.log.Debug().Int("acks", len(subjs)).Msg("sent the last unconfirmed acks again")
	}
}

// ackBody is the payload of an ack.
var ackBody = []byte("+ACK")

// leaderElectedSubject is where JetStream announces that a replicated
// consumer of the jobs stream has elected a leader (core NATS, clustered
// servers only).
func (n Names) leaderElectedSubject() string {
	return "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED." + n.JobsStream() + ".*"
}

// leaderSettle is how long after its creation a consumer's election of
// the leader this worker already knows is taken for its first.
const leaderSettle = 5 * time.Second

// watchLeaders sends the remembered acks again when the consumer of one of
// this worker's lanes elects a new leader, or when the connection comes
// back, until the returned stop is called. These are the signs that do not
// depend on this worker's own pulls: a long pull that went to the old
// leader just ends empty.
func (c *Consumer) watchLeaders(ctx context.Context) (stop func(), err error) {
	nc := c.js.Conn()
	subject := c.names.leaderElectedSubject()
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var adv struct {
			Consumer string    `json:"consumer"`
			Leader   string    `json:"leader"`
			Time     time.Time `json:"timestamp"`
		}
		if json.Unmarshal(m.Data, &adv) != nil {
			return
		}
		if c.reelected(adv.Consumer, adv.Leader, adv.Time) {
			c.log.Info().Str("consumer", adv.Consumer).Str("leader", adv.Leader).Msg("a batch's consumer has a new leader; sending the last acks again")
			c.reackSoon()
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", subject, err)
	}
	back := nc.StatusChanged(nats.CONNECTED)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range back {
			if ctx.Err() == nil {
				c.reackSoon()
			}
		}
	}()
	return func() {
		_ = sub.Unsubscribe()
		nc.RemoveStatusListener(back)
		wg.Wait()
	}, nil
}

// reelected reports whether the election of leader at (the server's
// clock) by the consumer named name is of one of this worker's lanes'
// consumers, and not its first: another leader than the one this worker
// knows, or the same one again well after the consumer was made (it came
// back). An election before this worker found the consumer, or while it
// makes it again, is not its concern: it sent no ack there yet.
func (c *Consumer) reelected(name, leader string, at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lanes {
		if l.name != name || l.cons == nil || l.creating {
			continue
		}
		known := l.leader
		l.leader = leader
		return leader != known || at.Sub(l.created) >= leaderSettle
	}
	return false
}
