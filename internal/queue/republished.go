package queue

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// ranBefore reports whether a delivery's job already has a result (its
// result stands, as for a file enqueued again: process acknowledges it
// without a request). enqueue looks completion markers up before it
// publishes; another producer does not, so a message it publishes again
// after the jobs stream's de-duplication window, or without a Nats-Msg-Id,
// would send its request a second time. Only such messages pay the lookup:
// one whose Nats-Msg-Id is enqueue's for this job (JobMsgID, or a forced
// run's or a re-run's, which extend it) was looked up when published. A
// failed lookup is returned: process defers the job rather than risk
// sending it twice.
func (c *Consumer) ranBefore(ctx context.Context, d *Delivery) (bool, error) {
	if d.Job.Kind != "" {
		return false, nil
	}
	own := JobMsgID(d.Job.ID, d.fp)
	if id := d.msg.Headers().Get(jetstream.MsgIDHeader); id == own || strings.HasPrefix(id, own+"/") {
		return false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, markerWait)
	defer cancel()
	markers, err := c.done.Lookup([]DoneKey{DoneKeyOf(d.Job.ID, d.fp)}).Wait(wctx)
	if err != nil {
		return false, err
	}
	return len(markers) == 1 && markers[0] != nil && markers[0].Of(d.Job.ID, d.fp) && markers[0].Run == d.Job.Redrive, nil
}
