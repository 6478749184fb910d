package queue

import "sync/atomic"

// failures counts what settling could not do, for metrics and alerts: each
// is logged too, and the job is redelivered after its ack wait.
type failures struct {
	results  atomic.Uint64 // a result (or a re-driven callback's dead letter) not stored
	settling atomic.Uint64 // an ack or NAK not confirmed
}

// ResultStoreFailures counts results that could not be stored (the job is
// redelivered after its ack wait): above zero for long, the results stream
// is unavailable or refuses this worker.
func (c *Consumer) ResultStoreFailures() uint64 { return c.failed.results.Load() }

// SettleFailures counts settlings that failed: acks and NAKs the server did
// not confirm, and unconfirmed ones (ackStored, park) that could not be
// written.
func (c *Consumer) SettleFailures() uint64 { return c.failed.settling.Load() }
