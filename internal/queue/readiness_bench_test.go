package queue

import (
	"testing"
	"time"
)

// What the autoscaling signal costs a job: one atomic add when its
// decision is made (a deferral for want of room also appends a due time).
func BenchmarkReadinessDecided(b *testing.B) {
	var r readiness
	now := time.Now
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.decidedOn(Decision{Action: AckWithResult}, 1, now)
		}
	})
}
