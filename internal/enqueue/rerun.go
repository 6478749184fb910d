package enqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/pkg/job"
)

// EarlierRun is what a re-run found of one earlier batch: jobs of its input
// that batch completed, and which of those it sends again because that
// run sent nothing for them.
type EarlierRun struct {
	Batch string `json:"batch"`
	// Completed were completed by that run and not sent again.
	Completed int `json:"completed"`
	// SentAgain failed there before any request was sent (refused,
	// breaker open, expired, cancelled) and are sent again by this run.
	SentAgain int `json:"sent_again,omitempty"`
	// First and Last bound when their completion markers were stored.
	First time.Time `json:"first_at"`
	Last  time.Time `json:"last_at"`
}

func (rep *PublishReport) run(m *queue.DoneMarker) *EarlierRun {
	r := rep.runs[m.Batch]
	if r == nil {
		r = &EarlierRun{Batch: m.Batch, First: m.At, Last: m.At}
		rep.runs[m.Batch] = r
	}
	if !m.At.IsZero() && (r.First.IsZero() || m.At.Before(r.First)) {
		r.First = m.At
	}
	if m.At.After(r.Last) {
		r.Last = m.At
	}
	return r
}

// maxRunNotes bounds how many earlier batches RerunNotes names.
const maxRunNotes = 10

// RerunNotes says, one line per earlier batch, what this run found it had
// done and what to do to send those jobs again.
func (rep *PublishReport) RerunNotes() []string {
	var out []string
	var moreBatches, moreJobs int
	for i, r := range rep.EarlierRuns {
		if i >= maxRunNotes {
			moreBatches++
			moreJobs += r.Completed + r.SentAgain
			continue
		}
		when := r.when()
		if r.Completed > 0 {
			out = append(out, fmt.Sprintf("%s already completed by batch %s%s; not sent again. "+
				"Use --force to send them again, or `enqueue redrive %s` for its failed ones.",
				plural(r.Completed, "job was", "jobs were"), termsafe.String(r.Batch), when, termsafe.String(r.Batch)))
		}
		if r.SentAgain > 0 {
			out = append(out, fmt.Sprintf("%s in batch %s%s before any request was sent (refused, breaker open, expired or cancelled); sent again.",
				plural(r.SentAgain, "job failed", "jobs failed"), termsafe.String(r.Batch), when))
		}
	}
	if moreBatches > 0 {
		out = append(out, fmt.Sprintf("... and %d jobs of %d more earlier batches.", moreJobs, moreBatches))
	}
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// when is " on T" or " between T1 and T2" (minutes, UTC), or "" if the
// markers carried no time.
func (r *EarlierRun) when() string {
	const layout = "2006-01-02 15:04"
	switch {
	case r.Last.IsZero():
		return ""
	case r.First.IsZero() || r.First.UTC().Format(layout) == r.Last.UTC().Format(layout):
		return " on " + r.Last.UTC().Format(layout) + " UTC"
	default:
		return " between " + r.First.UTC().Format(layout) + " and " + r.Last.UTC().Format(layout) + " UTC"
	}
}

func (rep *PublishReport) sortedRuns() []EarlierRun {
	out := make([]EarlierRun, 0, len(rep.runs))
	for _, r := range rep.runs {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Batch < out[j].Batch })
	return out
}

// skipCompletedEarlier accounts for a job an earlier run completed: it is not sent
// again, and with --wait its result is read where that run stored it.
func (rep *PublishReport) skipCompletedEarlier(m *queue.DoneMarker, key func(string) uint64, jobMsg []byte) {
	rep.CompletedEarlier++
	rep.run(m).Completed++
	if key == nil {
		return
	}
	rep.earlier[m.Batch] = append(rep.earlier[m.Batch], m.Seq)
	rep.completed[key(m.ID)] = jobSource(jobMsg)
}

// jobSource is the source (FILE:LINE) of an encoded job, "" if none.
func jobSource(jobMsg []byte) string {
	var j struct {
		Source string `json:"source"`
	}
	if json.Unmarshal(jobMsg, &j) != nil {
		return ""
	}
	return j.Source
}

// resend turns msg into a new run of a job whose earlier run (marked by m)
// sent nothing: the next re-drive count, so its result is not dropped as
// a duplicate of the earlier one in the same batch, and a de-duplication
// id of its own, so the jobs stream does not drop it within its window.
func (rep *PublishReport) resend(msg *queue.BulkMsg, m *queue.DoneMarker, rs *resends) error {
	var j job.Job
	if err := json.Unmarshal(msg.Data, &j); err != nil {
		return fmt.Errorf("job %q: %w", msg.ID, err)
	}
	j.Redrive = m.Run + 1
	data, err := job.Encode(&j)
	if err != nil {
		return fmt.Errorf("job %q: %w", msg.ID, err)
	}
	msg.Data = data
	if msg.MsgID == "" {
		msg.MsgID = queue.RerunMsgID(m, msg.FP)
	}
	rs.add(msg, m)
	rep.run(m) // counted once the broker has stored it (sentAgain)
	return nil
}

// resends follows the jobs sent again: the earlier run each replaces until
// the broker answers, then, per earlier batch, those stored, whose dead
// letters are retired once publishing is over.
type resends struct {
	seed    maphash.Seed
	mu      sync.Mutex
	waiting atomic.Int64 // len(pending), read without the lock: most runs send nothing again
	pending map[*queue.BulkMsg]*queue.DoneMarker
	// By earlier batch, used by the ack goroutine only: hashes of the ids
	// stored (or found stored by another re-run), and how many this run
	// stored.
	stored map[string][]uint64
	sent   map[string]int
}

func newResends() *resends {
	return &resends{
		seed: maphash.MakeSeed(), pending: map[*queue.BulkMsg]*queue.DoneMarker{},
		stored: map[string][]uint64{}, sent: map[string]int{},
	}
}

// count adds to rep the jobs this run sent again, once publishing is over.
func (r *resends) count(rep *PublishReport) {
	for batch, n := range r.sent {
		rep.runs[batch].SentAgain += n
		rep.Resent += n
	}
}

func (r *resends) add(msg *queue.BulkMsg, m *queue.DoneMarker) {
	r.mu.Lock()
	r.pending[msg] = m
	r.waiting.Add(1)
	r.mu.Unlock()
}

// acked returns the earlier run the answered message replaces, if any.
func (r *resends) acked(a queue.BulkAck) *queue.DoneMarker {
	if r.waiting.Load() == 0 {
		return nil
	}
	r.mu.Lock()
	m, ok := r.pending[a.Msg]
	if ok {
		delete(r.pending, a.Msg)
		r.waiting.Add(-1)
	}
	r.mu.Unlock()
	if m != nil && a.Err == nil {
		r.stored[m.Batch] = append(r.stored[m.Batch], maphash.String(r.seed, m.ID))
		if !a.Duplicate {
			r.sent[m.Batch]++
		}
	}
	return m
}

// retire removes the dead letters that the jobs sent again leave in their
// earlier batches, as a re-drive does: a later re-drive of those batches
// must not send them once more.
func (r *resends) retire(ctx context.Context, js jetstream.JetStream, n queue.Names) error {
	for batch, hs := range r.stored {
		slices.Sort(hs)
		_, err := queue.RetireDeadLetters(ctx, js, n, batch, func(res *job.Result) bool {
			_, sent := slices.BinarySearch(hs, maphash.String(r.seed, res.ID))
			return sent && !res.OK && res.Attempts == 0
		})
		if err != nil {
			return fmt.Errorf("retiring dead letters of batch %s: %w", batch, err)
		}
	}
	return nil
}

// collectElsewhere gives the collector the results that will not come on
// the batch's own subject: those of jobs an earlier run completed (read
// from the results stream where that run stored them) and those of jobs
// another run enqueued within the dedup window and has not completed yet
// (waited for through their completion markers). It returns once every
// such job has its result, or is known to have none, or ctx ends.
func (rep *PublishReport) collectElsewhere(ctx context.Context, js jetstream.JetStream, n queue.Names, done *queue.DoneIndex, col *Collector) error {
	for batch, seqs := range rep.earlier {
		err := fetchStored(ctx, js, n, batch, seqs, col, fromCompletedEarlier)
		if err != nil {
			return fmt.Errorf("reading results stored by batch %s: %w", batch, err)
		}
		delete(rep.earlier, batch)
	}
	// What was not found (expired, purged, or another job's: a stream
	// created anew reuses sequences) has no result to give.
	col.dropCompletedEarlier()
	if len(rep.dups) == 0 {
		return nil
	}
	return waitDuplicates(ctx, js, n, done, col, rep.dups)
}

// fetchStored reads results of batch by stream sequence into the
// collector.
func fetchStored(ctx context.Context, js jetstream.JetStream, n queue.Names, batch string, seqs []uint64, col *Collector, src source) error {
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	return queue.FetchResults(ctx, js, n, batch, seqs, func(_ uint64, data []byte) error {
		col.addStored(data, src)
		return nil
	})
}

// waitDuplicates polls the completion markers of jobs enqueued by another
// run until each has one, then reads its result. Duplicates are the rare
// case of enqueueing a file again while its first run is still going, so
// polling (one request per 1024 jobs) is cheap enough. A job whose message
// has left the jobs stream without leaving a marker (completed by an older
// worker, or the marker was lost) has no result to wait for: after two
// such sightings it is counted as missing. With done nil (markers cannot be
// read) only that last check is made.
func waitDuplicates(ctx context.Context, js jetstream.JetStream, n queue.Names, done *queue.DoneIndex, col *Collector, dups []dupRef) error {
	pause := 100 * time.Millisecond
	for round := 1; ; round++ {
		open := dups[:0]
		for _, d := range dups {
			if !col.resolved(d.h) {
				open = append(open, d)
			}
		}
		dups = open
		if len(dups) == 0 {
			return nil
		}
		found, unmarked, err := lookupDuplicates(ctx, done, dups)
		if err != nil {
			return err
		}
		for batch, seqs := range found {
			if err := fetchStored(ctx, js, n, batch, seqs, col, fromMarker); err != nil {
				return fmt.Errorf("reading results stored by batch %s: %w", batch, err)
			}
		}
		// A marker whose result is not stored (any more) leaves nothing
		// to wait for.
		for i, d := range dups {
			if !inSorted(unmarked, i) && !col.resolved(d.h) {
				col.dropMissing(d.h)
			}
		}
		// Now and then, look for jobs that left the queue without a
		// marker; only a few, as they are the exception.
		if round%5 == 0 && len(unmarked) > 0 {
			if err := dropGone(ctx, js, n, col, dups, unmarked[:min(len(unmarked), 256)]); err != nil {
				return err
			}
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// lookupDuplicates looks the duplicates' completion markers up: the result
// sequences they name, by batch, and the (ascending) indexes of the jobs
// without a marker of their own yet. With done nil every job is unmarked:
// a result then comes only on this batch's subject, if the other run used
// the same batch id.
func lookupDuplicates(ctx context.Context, done *queue.DoneIndex, dups []dupRef) (found map[string][]uint64, unmarked []int, err error) {
	found = map[string][]uint64{}
	if done == nil {
		for i := range dups {
			unmarked = append(unmarked, i)
		}
		return found, unmarked, nil
	}
	for start := 0; start < len(dups); start += queue.MaxDoneLookup {
		part := dups[start:min(start+queue.MaxDoneLookup, len(dups))]
		keys := make([]queue.DoneKey, len(part))
		for i, d := range part {
			keys[i] = d.key
		}
		markers, err := done.Lookup(keys).Wait(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("waiting for jobs enqueued by another run: %w", err)
		}
		for i := range part {
			// A job sent again still has its earlier run's marker
			// until the new run completes.
			if markers != nil && markers[i] != nil && markers[i].Seq != part[i].stale {
				m := markers[i]
				found[m.Batch] = append(found[m.Batch], m.Seq)
			} else {
				unmarked = append(unmarked, start+i)
			}
		}
	}
	return found, unmarked, nil
}

// dropGone counts as missing the checked duplicates whose job message was
// found gone from the jobs stream twice in a row with no marker.
func dropGone(ctx context.Context, js jetstream.JetStream, n queue.Names, col *Collector, dups []dupRef, check []int) error {
	seqs := make([]uint64, len(check))
	for i, j := range check {
		seqs[i] = dups[j].seq
	}
	pending, err := queue.PendingJobs(ctx, js, n, seqs)
	if err != nil {
		return fmt.Errorf("waiting for jobs enqueued by another run: %w", err)
	}
	for i, j := range check {
		if pending[i] {
			dups[j].gone = 0
			continue
		}
		if dups[j].gone++; dups[j].gone >= 2 {
			col.dropMissing(dups[j].h)
		}
	}
	return nil
}

// inSorted reports whether i is in the ascending list.
func inSorted(list []int, i int) bool {
	_, found := slices.BinarySearch(list, i)
	return found
}
