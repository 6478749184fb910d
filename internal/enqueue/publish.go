package enqueue

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/queue"
)

// DefaultWindow is how many publishes may wait for the broker's ack at
// once. Measured on the publish benchmark (BENCHMARKS.md): smaller windows
// leave the broker idle between acks, larger ones only cost memory.
const DefaultWindow = 2048

// lookahead is how many chunks of jobs (each with one lookup of completion
// markers in flight) are read ahead of publishing.
const lookahead = 8

// PublishOptions shape the second pass.
type PublishOptions struct {
	Batch  string
	Names  queue.Names
	Window int // unacknowledged publishes; DefaultWindow if 0
	// Done, if set, is asked before publishing: jobs completed by an
	// earlier run (of any batch) are not published again.
	Done *queue.DoneIndex
	// Legacy, with Done, also looks up the markers of the previous version,
	// keyed by the id alone (queue.DoneIndex.HasLegacy): one that sent
	// something refuses its job, which may or may not be the request it
	// marks.
	Legacy bool
	// ForceToken, if set, gives every job a new de-duplication id, so that
	// jobs completed or enqueued before are sent again.
	ForceToken string
	// Key, set with --wait (Collector.Key), makes the report keep, so
	// keyed, what collecting needs of the jobs whose results come from
	// elsewhere; Collector.Collect reads it from there.
	Key      func(id string) uint64
	Progress *Progress
	// Headers go on every job message (the run's trace context).
	Headers map[string]string
}

// PublishReport is what the second pass did.
type PublishReport struct {
	Published int
	// Duplicates were dropped by the jobs stream: the same id was enqueued
	// within the dedup window and has not completed yet.
	Duplicates int
	// CompletedEarlier were not published: an earlier run completed them.
	CompletedEarlier int
	// Resent are jobs an earlier run failed without sending anything
	// (refused before sending, turned away by an open breaker on every
	// try, expired, cancelled), published again as a
	// new run of each, since that cannot duplicate a request. Counted in
	// Published too; one another re-run already sent again is a Duplicate.
	Resent int
	// EarlierRuns says, per earlier batch, how many of this input's jobs it
	// completed and how many of those are sent again.
	EarlierRuns []EarlierRun
	// RetireErr is why the dead letters of jobs sent again could not all be
	// removed; a re-drive of their earlier batch would send them again.
	RetireErr error
	Failed    []*queue.PublishError
	// LookupErr is why completed jobs could not be looked up; the jobs
	// were published all the same (the dedup window still holds).
	LookupErr error
	Elapsed   time.Duration

	// earlier holds, by the batch that stored them, the result sequences
	// of the jobs completed by an earlier run (8 bytes a job): exactly the
	// results their markers name, the latest of each job, read in one pass.
	earlier map[string][]uint64
	// completed holds the keys of the jobs completed by an earlier run,
	// each with this run's source of the job (FILE:LINE, "" if none).
	completed map[uint64]string
	dups      []dupRef
	runs      map[string]*EarlierRun
	// refused are jobs refused before publishing (refuseLegacy), kept
	// apart from Failed, which the ack goroutine appends to, until
	// publishing is over.
	refused []*queue.PublishError
}

// dupRef is a job another run enqueued and has not completed yet.
type dupRef struct {
	key    queue.DoneKey
	h      uint64
	source string // this run's, given to the result another run stores
	seq    uint64 // of the job message in the jobs stream
	gone   uint8  // times the job message was found gone with no marker
	// stale, for a job sent again, is the result sequence of the earlier
	// run's marker: that marker is not this run's answer.
	stale uint64
}

type chunk struct {
	jobs   []spoolRecord
	call   *queue.DoneCall
	legacy *queue.DoneCall // markers keyed by the id alone; nil if none are looked up
}

// readChunks reads the spool into chunks of up to MaxDoneLookup jobs, each
// with the lookup of its completion markers sent (unless done is nil or
// lookups were given up), until the spool ends or ctx does.
func readChunks(ctx context.Context, rd *spoolReader, done *queue.DoneIndex, legacy bool, noLookups *atomic.Bool, chunks chan<- *chunk) error {
	for {
		c := &chunk{jobs: make([]spoolRecord, 0, queue.MaxDoneLookup)}
		for len(c.jobs) < queue.MaxDoneLookup {
			rec, err := rd.next(false)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			c.jobs = append(c.jobs, rec)
		}
		if len(c.jobs) == 0 {
			return nil
		}
		if done != nil && !noLookups.Load() {
			c.lookup(done, legacy)
		}
		select {
		case chunks <- c:
		case <-ctx.Done():
			return nil
		}
	}
}

// onAck accounts for the broker's answer to one publish.
func (rep *PublishReport) onAck(key func(string) uint64, rs *resends, prog *Progress) func(queue.BulkAck) {
	return func(a queue.BulkAck) {
		earlier := rs.acked(a)
		switch {
		case a.Err != nil:
			rep.Failed = append(rep.Failed, &queue.PublishError{ID: a.Msg.ID, Err: a.Err})
		case a.Duplicate:
			rep.Duplicates++
			if key != nil {
				d := dupRef{key: queue.DoneKeyOf(a.Msg.ID, a.Msg.FP), h: key(a.Msg.ID), seq: a.Seq, source: jobSource(a.Msg.Data)}
				if earlier != nil {
					d.stale = earlier.Seq
				}
				rep.dups = append(rep.dups, d)
			}
		default:
			rep.Published++
		}
		prog.published()
	}
}

// publishChunk publishes one chunk's jobs, given their markers (found, nil
// if none could be looked up): a job completed by an earlier run is
// skipped, one whose earlier run sent nothing goes as a new run. Only a
// marker of the same identity (id and request) counts; a legacy one that
// sent something refuses its job.
func (rep *PublishReport) publishChunk(ctx context.Context, pub *queue.BulkPublisher, c *chunk, found markers, subject string, o PublishOptions, rs *resends) error {
	for i, rec := range c.jobs {
		marker := found.of(i, rec)
		if lm := found.legacyOf(i, rec.id); lm != nil && !lm.SentNothing() && marker == nil {
			rep.refuseLegacy(rec, lm)
			o.Progress.published()
			continue
		}
		if marker != nil && !marker.SentNothing() {
			rep.skipCompletedEarlier(marker, o.Key, rec.data)
			o.Progress.completedEarlier()
			continue
		}
		m := &queue.BulkMsg{ID: rec.id, FP: rec.fp, Subject: subject, Data: rec.data}
		if o.ForceToken != "" {
			m.MsgID = queue.ForceMsgID(rec.id, rec.fp, o.ForceToken)
		}
		if marker != nil {
			if err := rep.resend(m, marker, rs); err != nil {
				return err
			}
		}
		if err := pub.Publish(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// Publish is the second pass: it publishes the spooled jobs with a bounded
// window of unacknowledged publishes, looking completion markers up in
// batches ahead of publishing and skipping the jobs that have one.
// It returns an error only when reading the spool fails or ctx ends;
// refused jobs are in the report.
func Publish(ctx context.Context, js jetstream.JetStream, sp *Spool, o PublishOptions) (*PublishReport, error) {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	rep := &PublishReport{earlier: map[string][]uint64{}, completed: map[uint64]string{}, runs: map[string]*EarlierRun{}}
	rd, err := sp.reader()
	if err != nil {
		return rep, err
	}
	start := time.Now()

	rctx, stopReader := context.WithCancel(ctx)
	var reader sync.WaitGroup
	var readErr error
	var noLookups atomic.Bool
	chunks := make(chan *chunk, lookahead)
	reader.Add(1)
	go func() {
		defer reader.Done()
		defer close(chunks)
		readErr = readChunks(rctx, rd, o.Done, o.Legacy, &noLookups, chunks)
	}()

	rs := newResends()
	pub := queue.NewBulkPublisher(ctx, js, o.Window, rep.onAck(o.Key, rs, o.Progress))
	pub.SetHeaders(o.Headers)
	subject := o.Names.JobSubject(o.Batch)
	var pubErr error
	for c := range chunks {
		found, err := c.wait(ctx)
		if err != nil {
			if ctx.Err() != nil {
				pubErr = ctx.Err()
				break
			}
			// Without the markers the dedup window is all that
			// protects; say so once and go on.
			rep.LookupErr = err
			noLookups.Store(true)
		}
		if err := rep.publishChunk(ctx, pub, c, found, subject, o, rs); err != nil {
			pubErr = err
			break
		}
	}
	pub.Close()
	rep.Failed = append(rep.Failed, rep.refused...)
	rep.Elapsed = time.Since(start)
	rs.count(rep)
	rep.EarlierRuns = rep.sortedRuns()
	if pubErr == nil {
		rep.RetireErr = rs.retire(ctx, js, o.Names)
	}
	stopReader()
	for c := range chunks {
		c.cancel()
	}
	reader.Wait()
	if pubErr != nil {
		return rep, pubErr
	}
	return rep, readErr
}
