package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetpost/jetpost/pkg/retry"
)

// Acks sent again. The ack of a job whose result and completion marker are
// stored is not confirmed (ackStored): one lost with a consumer leader
// that died, or in a connection to a server that went, would leave its job
// pending until the ack wait. So each lane remembers the last acks this
// worker sent that way, and the worker sends the recent ones again when
// its consumers may have lost some: when JetStream announces that a lane's
// consumer elected a new leader, when its connection comes back, and on
// every other sign that starts a rescue. Each sign sends them at once and
// again 3 and 10 s later, since it may come before the new leader is there
// to take them. Acks sent while the worker shuts down are not sent again.
//
// Sending an ack again is safe where a NAK is not: the job is finished
// (its result and marker are stored), and an ack for a message that is no
// longer pending, or pending with another worker that would settle it
// from its marker, changes nothing that matters. So this needs no census
// and no lock, and may run on every worker at once. It is sent only to the
// consumer it first went to (the lane's, of the same creation) and only
// for a minute: a jobs stream made again numbers its messages from 1, and
// an old ack to a new consumer of the same name would remove another job.

// reackAfter is when, after a sign, the remembered acks are sent again: at
// once, and after a leader election that may take a few seconds.
var reackAfter = [...]time.Duration{0, 3 * time.Second, 10 * time.Second}

// recentAck is how long an ack is remembered: only acks sent shortly
// before a leader was lost can be lost with it.
const recentAck = time.Minute

// minRecentAcks is the fewest acks a lane remembers. While a consumer has
// no leader it delivers nothing, so the acks it may lose are about those
// of the jobs the worker held: a few times MaxInflight.
const minRecentAcks = 1024

// sentAck is one unconfirmed ack: its reply subject, when it was sent,
// and the creation of the consumer it went to.
type sentAck struct {
	reply    string
	at       time.Time
	consumer time.Time
}

// recentAcks is a lane's ring of its last unconfirmed acks; it grows to
// its size as acks come.
type recentAcks struct {
	mu   sync.Mutex
	size int
	acks []sentAck
	next int
}

func newRecentAcks(size int) *recentAcks {
	return &recentAcks{size: max(size, minRecentAcks)}
}

func (r *recentAcks) add(a sentAck) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.acks) < r.size {
		r.acks = append(r.acks, a)
		return
	}
	r.acks[r.next] = a
	r.next = (r.next + 1) % r.size
}

// since returns the reply subjects of the acks sent to the consumer
// created at consumer, at or after from.
func (r *recentAcks) since(consumer, from time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.acks {
		if a.consumer.Equal(consumer) && !a.at.Before(from) {
			out = append(out, a.reply)
		}
	}
	return out
}

// reackSoon sends the remembered acks again at once and over the next
// seconds (reackAfter), unless Run is not running. A sign that comes while
// they are being sent starts the schedule again when it ends.
func (c *Consumer) reackSoon() {
	c.inBackground(&c.reacker, func(ctx context.Context) {
		var slept time.Duration
		for _, at := range reackAfter {
			if retry.Sleep(ctx, at-slept) != nil {
				return
			}
			slept = at
			c.reack()
		}
	})
}

// reack publishes the recent acks of every lane again, each to the
// consumer it first went to.
func (c *Consumer) reack() {
	type laneAcks struct {
		acks    *recentAcks
		created time.Time
	}
	c.mu.Lock()
	lanes := make([]laneAcks, 0, len(c.lanes))
	for _, l := range c.lanes {
		if l.cons != nil {
			lanes = append(lanes, laneAcks{l.acks, l.created})
		}
	}
	c.mu.Unlock()
	nc := c.js.Conn()
	from := c.now().Add(-recentAck)
	n := 0
	for _, l := range lanes {
		for _, reply := range l.acks.since(l.created, from) {
			if err := nc.Publish(reply, ackBody); err != nil {
				c.log.Debug().Err(err).Msg("sending acks again failed; the rescue or the ack wait settles their jobs")
				return
			}
			n++
		}
	}
	if n > 0 {
		c.log.Debug().Int("acks", n).Msg("sent the last unconfirmed acks again")
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
	elected := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(subject, elected)
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", subject, err)
	}
	back := nc.StatusChanged(nats.CONNECTED)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case m := <-elected:
				c.onElected(m)
			case <-back:
				c.reackSoon()
			case <-done:
				return
			}
		}
	}()
	return func() {
		_ = sub.Unsubscribe()
		nc.RemoveStatusListener(back)
		close(done)
		wg.Wait()
	}, nil
}

// onElected sends the acks again on a lane consumer's new leader.
func (c *Consumer) onElected(m *nats.Msg) {
	var adv struct {
		Consumer string    `json:"consumer"`
		Leader   string    `json:"leader"`
		Time     time.Time `json:"timestamp"`
	}
	if json.Unmarshal(m.Data, &adv) != nil || !c.reelected(adv.Consumer, adv.Leader, adv.Time) {
		return
	}
	c.log.Info().Str("consumer", adv.Consumer).Str("leader", adv.Leader).Msg("a batch's consumer has a new leader; sending the last acks again")
	c.reackSoon()
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
