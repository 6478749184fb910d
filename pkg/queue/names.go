package queue

import (
	"strings"
	"time"
)

// Names derives every subject, stream, consumer and bucket name from the
// subject prefix, so tenants with different prefixes never collide in one
// account.
type Names struct {
	Prefix string
}

// NewNames returns the names for prefix ("jetpost" by default).
func NewNames(prefix string) Names { return Names{Prefix: prefix} }

func (n Names) upper() string { return strings.ToUpper(strings.ReplaceAll(n.Prefix, "-", "_")) }

// JobsStream is the work-queue stream of jobs.
func (n Names) JobsStream() string { return n.upper() + "_JOBS" }

// ResultsStream keeps one result per job for downstream consumers.
func (n Names) ResultsStream() string { return n.upper() + "_RESULTS" }

// DLQStream keeps finally failed and undecodable jobs.
func (n Names) DLQStream() string { return n.upper() + "_DLQ" }

// AttemptsBucket remembers how many HTTP attempts a job has spent across
// redeliveries (JetStream's delivery count also counts deferrals).
func (n Names) AttemptsBucket() string { return n.upper() + "_ATTEMPTS" }

// Consumer is the durable pull consumer every worker shares.
func (n Names) Consumer() string { return "workers" }

// JobSubject is where a batch's jobs are published.
func (n Names) JobSubject(batch string) string { return n.Prefix + ".jobs." + batch }

// ResultSubject is where a batch's results are stored.
func (n Names) ResultSubject(batch string) string { return n.Prefix + ".results." + batch }

// DLQSubject is where a batch's dead letters are stored.
func (n Names) DLQSubject(batch string) string { return n.Prefix + ".dlq." + batch }

// StreamConfig is the shape of the streams, shared by every process that
// creates them.
type StreamConfig struct {
	Replicas      int
	DedupWindow   time.Duration // jobs: re-enqueued ids within it are dropped
	ResultsMaxAge time.Duration // results and dead letters
	// AttemptsTTL bounds how long attempt counts are remembered; it must
	// outlive the longest a job can wait (the maximum job age).
	AttemptsTTL time.Duration
}
