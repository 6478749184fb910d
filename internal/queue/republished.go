package queue

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ranBefore settles a delivery whose job already has a result, and reports
// whether it did. enqueue looks completion markers up before it publishes;
// another producer does not, so a message it publishes again after the
// jobs stream's de-duplication window, or without a Nats-Msg-Id, would
// send its request a second time. Only such messages pay the lookup: one
// whose Nats-Msg-Id is enqueue's for this job (JobMsgID, or a forced
// run's or a re-run's, which extend it) was looked up when published.
// A job with a marker of its identity and run is acknowledged without a
// request or a new result: its result stands, as for a file enqueued
// again. A failed lookup defers the job rather than risk sending it twice.
func (c *Consumer) ranBefore(ctx context.Context, d *Delivery) bool {
	if d.Job.Kind != "" {
		return false
	}
	fp := d.fp
	own := JobMsgID(d.Job.ID, fp)
	if id := d.msg.Headers().Get(jetstream.MsgIDHeader); id == own || strings.HasPrefix(id, own+"/") {
		return false
	}
	markers, err := c.done.Lookup([]DoneKey{DoneKeyOf(d.Job.ID, fp)}).Wait(ctx)
	if err != nil {
		c.deliveryEvent(c.log.Warn(), d).Err(err).Msg("looking up the completion marker of a job published by another producer failed; deferring it")
		c.settle(ctx, d, Decision{Action: NakAfter, Delay: time.Second})
		return true
	}
	if len(markers) == 0 || markers[0] == nil || !markers[0].Of(d.Job.ID, fp) || markers[0].Run != d.Job.Redrive {
		return false
	}
	defer d.keepalive.stop()
	c.deliveryEvent(c.log.Info(), d).Uint64("result_seq", markers[0].Seq).Msg("job published again after it ran; its result stands, no request sent")
	if err := c.ackDurable(ctx, d); err != nil {
		c.deliveryEvent(c.log.Warn(), d).Err(err).Msg("acknowledging a job that already ran failed; it will be redelivered")
	}
	return true
}
