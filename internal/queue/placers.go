package queue

import "context"

// Placed deliveries run on a pool of goroutines that outlive their jobs: a
// fresh goroutine per job would grow its stack again through the HTTP
// client on every request (a tenth of a worker's CPU per job at 0 ms). The
// pool grows to the most deliveries placed and not yet settled at once and
// ends with Run.

// placedJob is one delivery given a request place.
type placedJob struct {
	l *lane
	d *Delivery
}

// placeLocked hands d to an idle placer, or starts one. c.handlers counts
// it until it is settled.
func (c *Consumer) placeLocked(work context.Context, l *lane, d *Delivery, h Handler) {
	c.handlers.Add(1)
	if c.idlePlacers > 0 {
		c.idlePlacers--
		c.placedq <- placedJob{l: l, d: d}
		return
	}
	go c.placer(work, h, placedJob{l: l, d: d})
}

// placer runs placed deliveries until the queue closes.
func (c *Consumer) placer(work context.Context, h Handler, pj placedJob) {
	for {
		c.runPlaced(work, pj.l, pj.d, h)
		c.mu.Lock()
		c.idlePlacers++
		c.mu.Unlock()
		var ok bool
		if pj, ok = <-c.placedq; !ok {
			return
		}
	}
}

// stopPlacers ends the idle placers once every delivery is settled.
func (c *Consumer) stopPlacers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.placedq)
}
