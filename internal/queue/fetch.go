package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"

	"github.com/jetpost/jetpost/pkg/retry"
)

// fetchLoop keeps the window full: it pulls as many messages as there is
// room for, in one request, once at least half the prefetch window is free,
// so pulls are batched and a refill arrives before the slots run dry.
func (c *Consumer) fetchLoop(ctx context.Context, queue chan<- *Delivery, outstanding *atomic.Int64, room <-chan struct{}, window int) {
	refill := int64(max(1, c.cfg.Prefetch/2))
	failures := 0
	for ctx.Err() == nil {
		free := int64(window) - outstanding.Load()
		if free < refill {
			select {
			case <-room:
			case <-ctx.Done():
			}
			continue
		}
		began, got := time.Now(), 0
		batch, err := c.consumer().Fetch(int(free), jetstream.FetchMaxWait(c.cfg.PullWait))
		if err == nil {
			for msg := range batch.Messages() {
				outstanding.Add(1)
				got++
				queue <- c.accept(msg)
			}
			err = batch.Error()
		}
		if err == nil && got == 0 && time.Since(began) > c.cfg.PullWait+time.Second {
			// The server ends every pull by its expiry; only the client's
			// own timer ended this one: the consumer's leader went away.
			c.rescueSoon()
		}
		if err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			c.consuming.Store(false)
			failures++
			c.log.Warn().Err(err).Int("failures", failures).Msg("pulling jobs failed; retrying")
			if IsNotFound(err) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				// The server lost the consumer (restarted without its
				// store, or someone deleted it): create it again.
				if err := c.ensureConsumer(ctx); err != nil {
					c.log.Warn().Err(err).Msg("re-creating consumer failed")
				}
			}
			_ = retry.Sleep(ctx, brokerPause(failures))
			continue
		}
		if failures > 0 {
			// Pulls failed, most often because the consumer's leader was
			// lost or changed: deliveries may have gone with it.
			c.rescueSoon()
		}
		failures = 0
		c.consuming.Store(true)
	}
}

// accept wraps a fetched message and starts keeping it alive: its ack timer
// runs from the moment the server sent it, whether it waits for a slot or
// runs a long request.
func (c *Consumer) accept(msg jetstream.Msg) *Delivery {
	d := &Delivery{msg: msg}
	var stored time.Time
	if md, err := msg.Metadata(); err == nil {
		d.NumDelivered = md.NumDelivered
		d.Seq = md.Sequence.Stream
		stored = md.Timestamp
	}
	d.Job, d.decodeErr = c.inbound(msg, stored)
	if d.decodeErr == nil && d.Job.Kind != job.KindCallback { // a callback message is keyed by its job's result
		d.fp = c.names.Fingerprint(d.Job)
	}
	c.holds.hold(d.Seq)
	d.keepalive = startKeepalive(msg, c.cfg.AckWait/3)
	return d
}

// keepalive tells the server a message is still being worked on, every
// interval until stopped.
type keepalive struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func startKeepalive(msg jetstream.Msg, every time.Duration) *keepalive {
	k := &keepalive{}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.t = time.AfterFunc(every, func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.stopped {
			return
		}
		_ = msg.InProgress()
		k.t.Reset(every)
	})
	return k
}

func (k *keepalive) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	k.t.Stop()
}
