package queue

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// A batch holds one result per job and run: a re-drive, or a re-run that
// sends again a job whose earlier run sent nothing, adds a result for the
// same job. The latest in stream order is the job's result; the earlier
// ones are superseded (kept until they expire, but not returned).

// ReadResults calls fn with every result of batch stored now, in stream
// order, and returns how many there were. Results stored while it reads may
// or may not be included. A batch re-driven holds more than one result for
// some jobs; ReadLatestResults gives one per job.
func ReadResults(ctx context.Context, js jetstream.JetStream, n Names, batch string, fn func(seq uint64, data []byte) error) (int, error) {
	return readResultsUpTo(ctx, js, n, batch, 0, fn)
}

// readResultsUpTo is ReadResults stopping after stream sequence last (0:
// no bound).
func readResultsUpTo(ctx context.Context, js jetstream.JetStream, n Names, batch string, last uint64, fn func(seq uint64, data []byte) error) (int, error) {
	count := 0
	err := readStream(ctx, js, resultsOf(n, batch, 0, last), func(seq uint64, data []byte) (bool, error) {
		count++
		return false, fn(seq, data)
	})
	return count, err
}

func resultsOf(n Names, batch string, from, upTo uint64) streamRead {
	return streamRead{
		stream: n.ResultsStream(), subject: n.ResultSubject(batch), what: "results of batch " + batch,
		from: from, upTo: upTo,
	}
}

// FetchResults calls fn with the stored result records of batch at the
// given stream sequences (ascending). A sequence whose result is no longer
// stored (expired, purged) is left out; fn sees the others in order. A few
// are read one by one, many in one ordered read of the batch from the
// first of them, which reads a re-run's results at stream speed.
func FetchResults(ctx context.Context, js jetstream.JetStream, n Names, batch string, seqs []uint64, fn func(seq uint64, data []byte) error) error {
	if len(seqs) == 0 {
		return nil
	}
	if len(seqs) <= 32 {
		return getResults(ctx, js, n, batch, seqs, fn)
	}
	next := 0
	return readStream(ctx, js, resultsOf(n, batch, seqs[0], 0), func(seq uint64, data []byte) (bool, error) {
		for next < len(seqs) && seqs[next] < seq {
			next++ // not stored any more
		}
		if next < len(seqs) && seqs[next] == seq {
			next++
			if err := fn(seq, data); err != nil {
				return true, err
			}
		}
		return next == len(seqs), nil
	})
}

// getResults is FetchResults one message at a time.
func getResults(ctx context.Context, js jetstream.JetStream, n Names, batch string, seqs []uint64, fn func(seq uint64, data []byte) error) error {
	st, err := js.Stream(ctx, n.ResultsStream())
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.ResultsStream(), err)
	}
	subject := n.ResultSubject(batch)
	for _, seq := range seqs {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading result %d: %w", seq, err)
		}
		if m.Subject != subject {
			continue
		}
		if err := fn(seq, m.Data); err != nil {
			return err
		}
	}
	return nil
}

// LatestStats says what ReadLatestResults read.
type LatestStats struct {
	Results    int // handed to fn: one per job
	Superseded int // earlier results of the same jobs, left out
}

// ReadLatestResults calls fn, in stream order, with the latest stored
// result of each job of batch. It reads the batch twice: first the ids
// (16 bytes a result, to find the superseded ones), then the records up to
// where the first pass ended, so that a result stored in between cannot
// give a job two.
func ReadLatestResults(ctx context.Context, js jetstream.JetStream, n Names, batch string, fn func(seq uint64, data []byte) error) (LatestStats, error) {
	var st LatestStats
	superseded, last, err := supersededResults(ctx, js, n, batch)
	if err != nil || last == 0 {
		return st, err
	}
	st.Superseded = len(superseded)
	_, err = readResultsUpTo(ctx, js, n, batch, last, func(seq uint64, data []byte) error {
		if _, found := slices.BinarySearch(superseded, seq); found {
			return nil
		}
		st.Results++
		return fn(seq, data)
	})
	return st, err
}

// supersededResults returns, ascending, the stream sequences of batch's
// results that a later result of the same job replaces, and the last
// sequence it read (0: none). A 64-bit hash stands for the id: two ids of
// one batch collide with odds of about n²/2⁶⁵. Records without an id (an
// invalid message's, when none could be read) are never superseded.
func supersededResults(ctx context.Context, js jetstream.JetStream, n Names, batch string) ([]uint64, uint64, error) {
	type entry struct{ h, seq uint64 }
	seed := maphash.MakeSeed()
	var entries []entry
	var last uint64
	_, err := ReadResults(ctx, js, n, batch, func(seq uint64, data []byte) error {
		if id, ok := resultID(data); ok && id != "" {
			entries = append(entries, entry{maphash.String(seed, id), seq})
		}
		last = seq
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.h, b.h), cmp.Compare(a.seq, b.seq))
	})
	var out []uint64
	for i := 0; i+1 < len(entries); i++ {
		if entries[i].h == entries[i+1].h {
			out = append(out, entries[i].seq)
		}
	}
	slices.Sort(out)
	return out, last, nil
}

// resultID returns a result record's id. Workers write it first and
// escape-free ids are the rule, so it is read straight off the front,
// without a parse of the whole record (which costs more than its transfer).
func resultID(data []byte) (string, bool) {
	const prefix = `{"id":"`
	if rest, ok := bytes.CutPrefix(data, []byte(prefix)); ok {
		if end := bytes.IndexByte(rest, '"'); end >= 0 && bytes.IndexByte(rest[:end], '\\') < 0 {
			return string(rest[:end]), true
		}
	}
	var r struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(data, &r) != nil {
		return "", false
	}
	return r.ID, true
}

// ResultBatchCount returns how many results of batch are stored.
func ResultBatchCount(ctx context.Context, js jetstream.JetStream, n Names, batch string) (uint64, error) {
	st, err := js.Stream(ctx, n.ResultsStream())
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(n.ResultSubject(batch)))
	if err != nil {
		return 0, err
	}
	return info.State.Subjects[n.ResultSubject(batch)], nil
}

// ResultsLastSeq is the results stream's last sequence: every result
// stored from now on comes after it.
func ResultsLastSeq(ctx context.Context, js jetstream.JetStream, n Names) (uint64, error) {
	st, err := js.Stream(ctx, n.ResultsStream())
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", n.ResultsStream(), err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", n.ResultsStream(), err)
	}
	return info.State.LastSeq, nil
}
