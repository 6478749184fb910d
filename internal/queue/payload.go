package queue

import "math"

// PayloadHeaderRoom is kept free of the server's maximum payload for a
// message's headers (the de-duplication id, at most about 350 bytes, and
// NATS's own): enqueue refuses jobs that leave less, and results and dead
// letters are cut to leave it.
const PayloadHeaderRoom = 1 << 10

// PayloadLimit is the most a message's data may take under a server's
// maximum payload (as announced on connect; 0 before): the maximum less
// PayloadHeaderRoom, and never under half of it, so that an absurdly small
// maximum still leaves room for something.
func PayloadLimit(maxPayload int64) int {
	if maxPayload <= 0 {
		return math.MaxInt // never connected yet: the publish will tell
	}
	mp := int(maxPayload)
	return max(mp-PayloadHeaderRoom, mp/2)
}

// payloadLimit is the most a result or dead letter may take encoded.
func (c *Consumer) payloadLimit() int { return PayloadLimit(c.js.Conn().MaxPayload()) }
