package queue

import "context"

// Placed deliveries run on a pool of goroutines that outlive their jobs: a
// fresh goroutine per job would grow its stack again through the HTTP
// client on every request (a tenth of a worker's CPU per job at 0 ms). The
// pool grows to the most deliveries placed and not yet settled at once and
// ends with Run.

// placeLocked hands d to an idle placer (one waiting on the unbuffered
// queue), or starts one. c.handlers counts it until it is settled.
func (c *Consumer) placeLocked(work context.Context, d *Delivery, h Handler) {
	c.handlers.Add(1)
	select {
	case c.placedq <- d:
	default:
		go c.placer(work, h, d)
	}
}

// placer runs placed deliveries until the queue closes.
func (c *Consumer) placer(work context.Context, h Handler, d *Delivery) {
	for ok := true; ok; d, ok = <-c.placedq {
		c.runPlaced(work, d, h)
	}
}

// stopPlacers ends the idle placers once every delivery is settled.
func (c *Consumer) stopPlacers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.placedq)
}
