package queue

import (
	"strconv"
	"strings"

	"github.com/jetpost/jetpost/pkg/job"
)

// Names derives every subject, stream, consumer and bucket name from the
// subject prefix, so tenants with different prefixes never collide in one
// account. Every name jetpost stores under is spelled here.
type Names struct {
	Prefix string
}

// NewNames returns the names for prefix ("jetpost" by default).
func NewNames(prefix string) Names { return Names{Prefix: prefix} }

func (n Names) upper() string { return strings.ToUpper(strings.ReplaceAll(n.Prefix, "-", "_")) }

// anyBatch is the subject token that matches every batch.
const anyBatch = ">"

// JobsStream is the work-queue stream of jobs.
func (n Names) JobsStream() string { return n.upper() + "_JOBS" }

// ResultsStream keeps one result per job for downstream consumers.
func (n Names) ResultsStream() string { return n.upper() + "_RESULTS" }

// DLQStream keeps finally failed and undecodable jobs.
func (n Names) DLQStream() string { return n.upper() + "_DLQ" }

// Consumer is the durable pull consumer every worker shares.
func (n Names) Consumer() string { return "workers" }

// JobSubject is where a batch's jobs are published (batch ">": every batch).
func (n Names) JobSubject(batch string) string { return n.Prefix + ".jobs." + batch }

// ResultSubject is where a batch's results are stored (batch ">": every batch).
func (n Names) ResultSubject(batch string) string { return n.Prefix + ".results." + batch }

// DLQSubject is where a batch's dead letters are stored (batch ">": every batch).
func (n Names) DLQSubject(batch string) string { return n.Prefix + ".dlq." + batch }

// AttemptsBucket remembers how many HTTP attempts a job has spent across
// redeliveries (JetStream's delivery count also counts deferrals).
func (n Names) AttemptsBucket() string { return n.upper() + "_ATTEMPTS" }

// DoneBucket is the KV bucket of completion markers.
func (n Names) DoneBucket() string { return n.upper() + "_DONE" }

// BreakersBucket holds the breaker states workers report.
func (n Names) BreakersBucket() string { return n.upper() + "_BREAKERS" }

// doneSubjectPrefix is what a key in the done bucket is stored under, less
// the key: the KV convention "$KV.<bucket>.<key>".
func (n Names) doneSubjectPrefix() string { return "$KV." + n.DoneBucket() + "." }

// RatesBucket holds the fleet-wide rate buckets of host limits (fleetrate).
func (n Names) RatesBucket() string { return n.upper() + "_RATES" }

// HostLimitsBucket is the board where workers post their host limits
// (fleetrate).
func (n Names) HostLimitsBucket() string { return n.upper() + "_HOSTLIMITS" }

// doneSubject is what key k of the done bucket is stored under.
func (n Names) doneSubject(k DoneKey) string { return n.doneSubjectPrefix() + k.String() }

// doneDirectGet is the direct-get API subject of the done bucket's stream
// ("KV_<bucket>"), under the JetStream API prefix apiPrefix (ending in ".").
func (n Names) doneDirectGet(apiPrefix string) string {
	return apiPrefix + "DIRECT.GET.KV_" + n.DoneBucket()
}

// De-duplication ids (Nats-Msg-Id): what makes storing twice store once.

// ResultID is the de-duplication id of a job's result: one result per job
// and run (a re-drive is a new run).
func ResultID(j *job.Job) string {
	id := j.Batch + "/" + j.ID
	if j.Redrive > 0 {
		id += "/r" + strconv.Itoa(j.Redrive)
	}
	return id
}

// callbackDeadLetterID is the de-duplication id of a re-driven callback's
// dead letter: one per callback message, however often it is re-driven.
func callbackDeadLetterID(j *job.Job, seq uint64) string {
	return ResultID(j) + "/callback/" + strconv.FormatUint(seq, 10)
}

// invalidMsgID is the de-duplication id of an invalid message's result and
// dead letter: it has no trustworthy id, its stream sequence stands for it.
func invalidMsgID(seq uint64) string { return "poison/" + strconv.FormatUint(seq, 10) }

// RerunMsgID is the de-duplication id of a job sent again after the run
// marked by m sent nothing (see RunMsgID).
func RerunMsgID(m *DoneMarker) string { return RunMsgID(m.ID, m.Batch, m.Run+1) }

// RunMsgID is the de-duplication id of run number run of job id, sent again
// after its previous run in batch failed. The job id alone would be dropped
// within the dedup window. A re-drive and a re-run build it alike, so the
// two cannot both send one job again, and repeating either is idempotent.
func RunMsgID(id, batch string, run int) string {
	return id + "/run/" + batch + "/" + strconv.Itoa(run)
}

// redriveMsgID is the de-duplication id of the message that re-drives job
// j from dead letter dlSeq: a job's next run (RunMsgID), or a failed
// callback re-sent once per dead letter.
func redriveMsgID(j *job.Job, dlSeq uint64) string {
	if j.Kind == job.KindCallback {
		return j.ID + "/callback/" + strconv.FormatUint(dlSeq, 10)
	}
	return RunMsgID(j.ID, j.Batch, j.Redrive)
}

// StoreName is one stream or bucket jetpost keeps.
type StoreName struct {
	Kind   string `json:"kind"`   // "stream" or "bucket"
	Name   string `json:"name"`   // JETPOST_JOBS, JETPOST_BREAKERS…
	Stream string `json:"stream"` // the JetStream stream holding it (KV_<bucket> for a bucket)
	// Essential: jobs cannot be processed without it. The others serve
	// features a worker degrades (breaker board, limits board, shared rate
	// limits, which then send nothing to rate-limited hosts).
	Essential bool `json:"essential"`
}

// Stores lists every stream and bucket jetpost keeps, essential first.
func (n Names) Stores() []StoreName {
	bucket := func(name string, essential bool) StoreName {
		return StoreName{Kind: "bucket", Name: name, Stream: "KV_" + name, Essential: essential}
	}
	return []StoreName{
		{Kind: "stream", Name: n.JobsStream(), Stream: n.JobsStream(), Essential: true},
		{Kind: "stream", Name: n.ResultsStream(), Stream: n.ResultsStream(), Essential: true},
		{Kind: "stream", Name: n.DLQStream(), Stream: n.DLQStream(), Essential: true},
		bucket(n.DoneBucket(), true),
		bucket(n.AttemptsBucket(), true),
		bucket(n.BreakersBucket(), false),
		bucket(n.RatesBucket(), false),
		bucket(n.HostLimitsBucket(), false),
	}
}
