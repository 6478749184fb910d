package enqueue

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// Input is one source of jobs: a file, or standard input.
type Input struct {
	Name string // as the user gave it; "-" is standard input
	// SecretHeaders are left out of derived ids and fingerprints, as
	// queue.Names.SecretHeaders (Run sets them from Options.Names).
	SecretHeaders []string
	// IdentityKey is queue.Names.IdentityKey (job.Fingerprint).
	IdentityKey []byte
	// Policy is what the deployment lets a job ask for (reply_to, timeout):
	// a line asking more is invalid, FILE:LINE, as workers would refuse it.
	Policy job.Policy
	stdin  io.Reader
}

// OpenInputs resolves the arguments: files must exist and be regular files;
// "-" (at most once) is standard input.
func OpenInputs(args []string, stdin io.Reader) ([]*Input, error) {
	var ins []*Input
	sawStdin := false
	for _, a := range args {
		if a == "-" {
			if sawStdin {
				return nil, errors.New("- (standard input) is given more than once")
			}
			sawStdin = true
			ins = append(ins, &Input{Name: a, stdin: stdin})
			continue
		}
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if st.IsDir() {
			return nil, fmt.Errorf("%s: is a directory", a)
		}
		ins = append(ins, &Input{Name: a})
	}
	return ins, nil
}

// displayName is how errors name the input.
func (in *Input) displayName() string {
	if in.Name == "-" {
		return "<stdin>"
	}
	return in.Name
}

// open returns the input's content, decompressed if it is gzip (told by its
// first bytes, whatever its name).
func (in *Input) open() (io.Reader, func(), error) {
	var r io.Reader = in.stdin
	closeFn := func() {}
	if in.stdin == nil {
		f, err := os.Open(in.Name)
		if err != nil {
			return nil, nil, err
		}
		r, closeFn = f, func() { _ = f.Close() }
	}
	br := bufio.NewReaderSize(r, 64<<10)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			closeFn()
			return nil, nil, fmt.Errorf("%s: %w", in.displayName(), err)
		}
		return zr, closeFn, nil
	}
	return br, closeFn, nil
}

// Each decodes every entry of the input, calling fn for valid jobs (an
// error from fn stops it) and bad, if set, for invalid ones, in order.
// Standard input can be read only once.
func (in *Input) Each(fn func(*job.Job) error, bad func(*job.LineError)) error {
	return in.EachAt(func(j *job.Job, _ int) error { return fn(j) }, bad)
}

// EachAt is Each, telling fn the line where each job starts. Each job's
// Source names that line ("-:LINE" for standard input).
func (in *Input) EachAt(fn func(j *job.Job, line int) error, bad func(*job.LineError)) error {
	r, closeFn, err := in.open()
	if err != nil {
		return err
	}
	defer closeFn()
	dec := job.NewDecoder(r, in.displayName())
	dec.SetSecretHeaders(in.SecretHeaders)
	for {
		j, err := dec.Next()
		if err == io.EOF {
			return nil
		}
		if le, ok := errors.AsType[*job.LineError](err); ok {
			if bad != nil {
				bad(le)
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := in.Policy.Check(j); err != nil {
			if bad != nil {
				bad(&job.LineError{File: in.displayName(), Line: dec.Line(), Err: err})
			}
			continue
		}
		j.Source = job.SourceOf(in.Name, dec.Line())
		if err := fn(j, dec.Line()); err != nil {
			return err
		}
	}
}

// Validate reads every input to the end, without spooling or publishing
// anything, and counts the valid and invalid entries.
func Validate(ins []*Input) (Validation, error) {
	var v Validation
	for _, in := range ins {
		err := in.Each(func(*job.Job) error { v.Valid++; return nil }, func(le *job.LineError) {
			v.Invalid++
			if len(v.Errors) < MaxReported {
				v.Errors = append(v.Errors, le)
			}
		})
		if err != nil {
			return v, err
		}
	}
	return v, nil
}

// Validation is what the first pass over the inputs found.
type Validation struct {
	Valid   int
	Invalid int
	Errors  []*job.LineError // the first MaxReported of them
	// Spool holds the valid jobs, encoded for the wire, for the second
	// pass. The caller closes it.
	Spool *Spool
	// Large lists every job whose encoding exceeds LargeJobBytes, so each
	// can be checked against the broker's maximum payload once it is
	// known: one unchecked job the broker refuses would leave a batch half
	// published. There are at most input size ÷ LargeJobBytes of them.
	Large []LargeJob
}

// LargeJob is a job big enough that a broker may refuse it.
type LargeJob struct {
	File  string
	Line  int
	ID    string
	Bytes int
}

// LargeJobBytes is the smallest encoded size recorded as large: below any
// maximum payload a NATS server would plausibly be configured with.
const LargeJobBytes = 64 << 10

// TooLarge returns, as FILE:LINE errors, every large job that a broker with
// the given maximum payload would refuse (header room included), by the
// same queue.PayloadLimit the workers cut results to.
func (v *Validation) TooLarge(maxPayload int64) []*job.LineError {
	var errs []*job.LineError
	limit := queue.PayloadLimit(maxPayload)
	for _, l := range v.Large {
		if l.Bytes > limit {
			errs = append(errs, &job.LineError{File: l.File, Line: l.Line,
				Err: fmt.Errorf("job %q is %d bytes encoded; the NATS server accepts at most %d bytes per message (max_payload)", l.ID, l.Bytes, maxPayload)})
		}
	}
	return errs
}

// MaxReported bounds how many invalid lines are listed; the count is exact.
const MaxReported = 100

// Prepare is the first pass: it reads every input to the end, validating
// every entry, and spools the valid jobs, encoded for the wire after setup
// (which sets what the enqueuer decides: batch, time…) has seen each, so
// that publishing needs neither a second decode nor a second read of
// standard input or of a compressed file. Decoding and encoding run on two
// goroutines. Nothing is published.
func Prepare(ins []*Input, setup func(*job.Job)) (*Validation, error) {
	sp, err := newSpool()
	if err != nil {
		return nil, err
	}
	v := &Validation{Spool: sp}
	const chunk = 256
	type entry struct {
		j    *job.Job
		fp   job.Fingerprint
		file string
		line int
	}
	jobs := make(chan []entry, 8)
	var decodeErr error
	go func() {
		defer close(jobs)
		buf := make([]entry, 0, chunk)
		bad := func(le *job.LineError) {
			v.Invalid++
			if len(v.Errors) < MaxReported {
				v.Errors = append(v.Errors, le)
			}
		}
		across := newAcrossInputs(len(ins))
		for _, in := range ins {
			file := in.displayName()
			err := in.EachAt(func(j *job.Job, line int) error {
				// Hashed here, on the decoding goroutine: the encoder
				// is the busier one.
				fp := j.Fingerprint(in.SecretHeaders, in.IdentityKey)
				if err := across.claim(j.ID, fp, file); err != nil {
					bad(&job.LineError{File: file, Line: line, Err: err})
					return nil
				}
				buf = append(buf, entry{j, fp, file, line})
				if len(buf) == chunk {
					jobs <- buf
					buf = make([]entry, 0, chunk)
				}
				return nil
			}, bad)
			if err != nil {
				decodeErr = err
				return
			}
		}
		if len(buf) > 0 {
			jobs <- buf
		}
	}()
	var encodeErr error
	for b := range jobs {
		for _, e := range b {
			j := e.j
			if encodeErr != nil {
				continue // drain, so the decoder ends
			}
			if setup != nil {
				setup(j)
			}
			data, err := job.Encode(j)
			if err == nil && len(data) > LargeJobBytes {
				v.Large = append(v.Large, LargeJob{File: e.file, Line: e.line, ID: j.ID, Bytes: len(data)})
			}
			if err == nil {
				err = sp.write(j.ID, e.fp, data)
			}
			if err != nil {
				encodeErr = fmt.Errorf("job %q: %w", j.ID, err)
				continue
			}
			v.Valid++
		}
	}
	// The decoder's writes to v happen before close(jobs).
	if err := errors.Join(decodeErr, encodeErr); err != nil {
		sp.Close()
		return nil, err
	}
	if err := sp.finish(); err != nil {
		sp.Close()
		return nil, err
	}
	return v, nil
}

// ExpectAll tells the collector every valid job's id, and seals it: the
// results it waits for are exactly those of the spooled jobs.
func (v *Validation) ExpectAll(col *Collector) error {
	col.Reserve(v.Valid)
	if err := v.Spool.ids(col.Expect); err != nil {
		return err
	}
	col.Seal()
	return nil
}
