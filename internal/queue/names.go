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
	// SecretHeaders are the header names, besides the built-in ones, whose
	// values a job's identity never depends on (JETPOST_REDACT_HEADERS).
	// Like Prefix, enqueue and every worker must agree on them: the keys
	// of completion markers and the de-duplication ids depend on them.
	SecretHeaders []string
	// IdentityKey (JETPOST_IDENTITY_KEY), when set, makes credentials part
	// of a job's identity through a keyed digest (job.Fingerprint); enqueue
	// and every worker must share it too.
	IdentityKey []byte
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

// Fingerprint is the fingerprint of j's request, as every part of one
// deployment computes it.
func (n Names) Fingerprint(j *job.Job) job.Fingerprint {
	return j.Fingerprint(n.SecretHeaders, n.IdentityKey)
}

// DoneKey is the key of j's completion marker.
func (n Names) DoneKey(j *job.Job) DoneKey { return DoneKeyOf(j.ID, n.Fingerprint(j)) }

// De-duplication ids (Nats-Msg-Id): what makes storing twice store once.
// Each holds the job's identity, its id and its request's fingerprint, so
// two jobs with one id are never taken for each other. The fingerprint is
// fixed-size and batch names have no "/", so no two of these ids are
// spelled alike, whatever "/" the job ids hold.

// JobMsgID is the de-duplication id of a job published by enqueue: the same
// request with the same id, enqueued again within the dedup window, is
// stored once; the same id with another request is another job.
func JobMsgID(id string, fp job.Fingerprint) string { return id + "/" + fp.String() }

// ForceMsgID is the de-duplication id of a job that --force sends again:
// new for each forced run (token).
func ForceMsgID(id string, fp job.Fingerprint, token string) string {
	return JobMsgID(id, fp) + "/force/" + token
}

// ResultID is the de-duplication id of a job's result: one result per job
// and run (a re-drive is a new run). fp is the job's Fingerprint: a batch
// id used again for another request with the same id stores its own result.
func ResultID(j *job.Job, fp job.Fingerprint) string {
	id := j.Batch + "/" + JobMsgID(j.ID, fp)
	if j.Redrive > 0 {
		id += "/r" + strconv.Itoa(j.Redrive)
	}
	return id
}

// callbackDeadLetterID is the de-duplication id of a re-driven callback's
// dead letter: one per callback message, however often it is re-driven.
// The message's stream sequence makes it unique on its own.
func callbackDeadLetterID(j *job.Job, seq uint64) string {
	return j.Batch + "/" + j.ID + "/callback/" + strconv.FormatUint(seq, 10)
}

// invalidMsgID is the de-duplication id of an invalid message's result and
// dead letter: it has no trustworthy id, its stream sequence stands for it.
func invalidMsgID(seq uint64) string { return "poison/" + strconv.FormatUint(seq, 10) }

// RerunMsgID is the de-duplication id of a job sent again after the run
// marked by m sent nothing (see RunMsgID); fp is the job's fingerprint (a
// legacy marker has none).
func RerunMsgID(m *DoneMarker, fp job.Fingerprint) string {
	return RunMsgID(m.ID, fp, m.Batch, m.Run+1)
}

// RunMsgID is the de-duplication id of run number run of job id (request
// fingerprint fp), sent again after its previous run in batch failed. The
// job's first id would be dropped within the dedup window. A re-drive and a
// re-run build it alike, so the two cannot both send one job again, and
// repeating either is idempotent.
func RunMsgID(id string, fp job.Fingerprint, batch string, run int) string {
	return JobMsgID(id, fp) + "/run/" + batch + "/" + strconv.Itoa(run)
}

// redriveMsgID is the de-duplication id of the message that re-drives job
// j from dead letter dlSeq: a job's next run (RunMsgID), or a failed
// callback re-sent once per dead letter.
func (n Names) redriveMsgID(j *job.Job, dlSeq uint64) string {
	if j.Kind == job.KindCallback {
		return j.ID + "/callback/" + strconv.FormatUint(dlSeq, 10)
	}
	return RunMsgID(j.ID, n.Fingerprint(j), j.Batch, j.Redrive)
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
		bucket(n.BatchesBucket(), true),
		bucket(n.AttemptsBucket(), true),
		bucket(n.BreakersBucket(), false),
		bucket(n.RatesBucket(), false),
		bucket(n.HostLimitsBucket(), false),
	}
}
