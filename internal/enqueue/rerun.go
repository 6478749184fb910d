package enqueue

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/queue"
)

// CollectEarlier gives the collector the results that will not come on the
// batch's own subject: those of jobs an earlier run completed (read from
// the results stream where that run stored them) and those of jobs another
// run enqueued within the dedup window and has not completed yet (waited
// for through their completion markers). It returns once every such job has
// its result, or is known to have none, or ctx ends.
func (rep *PublishReport) CollectEarlier(ctx context.Context, js jetstream.JetStream, n queue.Names, done *queue.DoneIndex, col *Collector) error {
	for batch, refs := range rep.earlier {
		var err error
		if refs.all {
			_, err = queue.ReadResults(ctx, js, n, batch, func(_ uint64, data []byte) error {
				col.addStored(data, fromEarlier)
				return nil
			})
		} else {
			err = fetchStored(ctx, js, n, batch, refs.seqs, col, fromEarlier)
		}
		if err != nil {
			return fmt.Errorf("reading results stored by batch %s: %w", batch, err)
		}
		delete(rep.earlier, batch)
	}
	// What was not found (expired, purged, or another job's: a stream
	// created anew reuses sequences) has no result to give.
	col.dropEarlier()
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
		found := map[string][]uint64{}
		var unmarked []int
		if done == nil {
			// No markers to look at (the lookup failed): a result comes
			// only on this batch's subject, if the other run used the
			// same batch id; a job gone from the queue without one has
			// none to wait for.
			for i := range dups {
				unmarked = append(unmarked, i)
			}
		}
		for start := 0; done != nil && start < len(dups); start += queue.MaxDoneLookup {
			part := dups[start:min(start+queue.MaxDoneLookup, len(dups))]
			keys := make([]queue.DoneKey, len(part))
			for i, d := range part {
				keys[i] = d.key
			}
			markers, err := done.Lookup(keys).Wait(ctx)
			if err != nil {
				return fmt.Errorf("waiting for jobs enqueued by another run: %w", err)
			}
			for i := range part {
				if markers != nil && markers[i] != nil {
					m := markers[i]
					found[m.Batch] = append(found[m.Batch], m.Seq)
				} else {
					unmarked = append(unmarked, start+i)
				}
			}
		}
		for batch, seqs := range found {
			if err := fetchStored(ctx, js, n, batch, seqs, col, fromMarker); err != nil {
				return fmt.Errorf("reading results stored by batch %s: %w", batch, err)
			}
		}
		// A marker whose result is not stored (any more) leaves nothing
		// to wait for.
		for i, d := range dups {
			if inSorted(unmarked, i) {
				continue
			}
			if !col.resolved(d.h) {
				col.dropMissing(d.h)
			}
		}
		// Now and then, look for jobs that left the queue without a
		// marker; only a few, as they are the exception.
		if round%5 == 0 && len(unmarked) > 0 {
			check := unmarked[:min(len(unmarked), 256)]
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

// inSorted reports whether i is in the ascending list.
func inSorted(list []int, i int) bool {
	_, found := slices.BinarySearch(list, i)
	return found
}
