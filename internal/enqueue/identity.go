package enqueue

import (
	"context"
	"fmt"
	"hash/maphash"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// markers are the completion markers found for one chunk's jobs, indexed
// like them: under the key of each job's identity, and (when legacy markers
// are looked up) under the key of its id alone. Either may be nil.
type markers struct {
	own, legacy []*queue.DoneMarker
}

// of is job i's marker: the one of its identity (a key shared by another
// identity, 128 bits colliding, would not be).
func (f markers) of(i int, rec spoolRecord) *queue.DoneMarker {
	if f.own == nil || f.own[i] == nil || !f.own[i].Of(rec.id, rec.fp) {
		return nil
	}
	return f.own[i]
}

// legacyOf is the marker the previous version left for job i's id, if any:
// it names a run of some request with that id, not necessarily this one.
func (f markers) legacyOf(i int, id string) *queue.DoneMarker {
	if f.legacy == nil || f.legacy[i] == nil || f.legacy[i].ID != id || !f.legacy[i].Legacy() {
		return nil
	}
	return f.legacy[i]
}

// lookup sends the chunk's marker lookups.
func (c *chunk) lookup(done *queue.DoneIndex, legacy bool) {
	keys := make([]queue.DoneKey, len(c.jobs))
	for i, rec := range c.jobs {
		keys[i] = queue.DoneKeyOf(rec.id, rec.fp)
	}
	c.call = done.Lookup(keys)
	if !legacy {
		return
	}
	old := make([]queue.DoneKey, len(c.jobs))
	for i, rec := range c.jobs {
		old[i] = queue.LegacyDoneKeyOf(rec.id)
	}
	c.legacy = done.Lookup(old)
}

// wait collects the chunk's markers; on an error none are returned.
func (c *chunk) wait(ctx context.Context) (markers, error) {
	var f markers
	var err error
	if c.call != nil {
		if f.own, err = c.call.Wait(ctx); err != nil {
			c.cancel()
			return markers{}, err
		}
	}
	if c.legacy != nil {
		if f.legacy, err = c.legacy.Wait(ctx); err != nil {
			return markers{}, err
		}
	}
	return f, nil
}

// cancel abandons the chunk's lookups.
func (c *chunk) cancel() {
	for _, call := range []*queue.DoneCall{c.call, c.legacy} {
		if call != nil {
			call.Cancel()
		}
	}
}

// LegacyMarkerError refuses a job whose id has a completion marker written
// before markers recorded the request: sending it might send a request
// again, skipping it might give it another request's result, so neither
// is done without the user's word.
type LegacyMarkerError struct {
	Source string // FILE:LINE of the job, "" if unknown
	Batch  string // that marked the id
}

func (e *LegacyMarkerError) Error() string {
	where := ""
	if e.Source != "" {
		where = e.Source + ": "
	}
	return fmt.Sprintf("%sthis id was completed by batch %s before jetpost recorded which request a completed id sent, "+
		"so it cannot tell whether this is the same request: not sent (--force sends it; a different request needs another id)", where, e.Batch)
}

// refuseLegacy counts a job refused for a legacy marker as not published.
func (rep *PublishReport) refuseLegacy(rec spoolRecord, m *queue.DoneMarker) {
	rep.refused = append(rep.refused, &queue.PublishError{ID: rec.id, Err: &LegacyMarkerError{Source: jobSource(rec.data), Batch: m.Batch}})
}

// acrossInputs checks that an id names one request across the inputs of
// one run (each Decoder checks within its file): one batch cannot hold two
// jobs with one id, their results would be taken for each other's. The
// same id with the same request in two inputs is one job, as in two runs.
// It costs nothing with one input, about 40 bytes an id with more.
type acrossInputs struct {
	seed  maphash.Seed
	first map[uint64]firstSeen // by id hash
	files []string
}

type firstSeen struct {
	fp   uint64 // hash of the fingerprint
	file uint32 // index into files
}

func newAcrossInputs(inputs int) *acrossInputs {
	if inputs < 2 {
		return nil
	}
	return &acrossInputs{seed: maphash.MakeSeed(), first: map[uint64]firstSeen{}}
}

// claim records id's request, or refuses another request under an id an
// earlier input used. A 64-bit hash stands for the id (a false refusal has
// odds of about n²/2⁶⁵, and is loud).
func (a *acrossInputs) claim(id string, fp job.Fingerprint, file string) error {
	if a == nil {
		return nil
	}
	if len(a.files) == 0 || a.files[len(a.files)-1] != file {
		a.files = append(a.files, file)
	}
	h, f := maphash.String(a.seed, id), maphash.Bytes(a.seed, fp[:])
	prev, seen := a.first[h]
	if !seen {
		a.first[h] = firstSeen{fp: f, file: uint32(len(a.files) - 1)}
		return nil
	}
	if prev.fp == f {
		return nil
	}
	return fmt.Errorf("id %q is the id of another request in %s: ids must name one request across the inputs of a run", id, a.files[prev.file])
}
