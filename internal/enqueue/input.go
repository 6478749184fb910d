package enqueue

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/jetpost/jetpost/pkg/job"
)

// Input is one source of jobs: a file, or standard input spooled to a
// temporary file so it can be read twice (validate everything, then publish).
type Input struct {
	Name string // as the user gave it; "-" is standard input
	path string
	temp bool
}

// OpenInputs resolves the arguments. Standard input is copied to a temporary
// file so validation can finish before anything is published; Close removes it.
func OpenInputs(args []string, stdin io.Reader) ([]*Input, error) {
	var ins []*Input
	for _, a := range args {
		if a != "-" {
			st, err := os.Stat(a)
			if err != nil {
				return nil, err
			}
			if st.IsDir() {
				return nil, fmt.Errorf("%s: is a directory", a)
			}
			ins = append(ins, &Input{Name: a, path: a})
			continue
		}
		f, err := os.CreateTemp("", "jetpost-stdin-*.jsonl")
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(f, stdin)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		in := &Input{Name: "-", path: f.Name(), temp: true}
		ins = append(ins, in)
		if err != nil {
			CloseInputs(ins)
			return nil, fmt.Errorf("reading standard input: %w", err)
		}
	}
	return ins, nil
}

// CloseInputs removes temporary spool files.
func CloseInputs(ins []*Input) {
	for _, in := range ins {
		if in.temp {
			_ = os.Remove(in.path)
		}
	}
}

// Each decodes every entry of the input, calling fn for valid jobs and bad
// for invalid ones, in order.
func (in *Input) Each(fn func(*job.Job) error, bad func(*job.LineError)) error {
	f, err := os.Open(in.path)
	if err != nil {
		return err
	}
	defer f.Close()
	name := in.Name
	if name == "-" {
		name = "<stdin>"
	}
	dec := job.NewDecoder(f, name)
	for {
		j, err := dec.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var le *job.LineError
		if errors.As(err, &le) {
			if bad != nil {
				bad(le)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := fn(j); err != nil {
			return err
		}
	}
}

// Validation is what a first pass over the inputs found.
type Validation struct {
	Valid   int
	Invalid int
	Errors  []*job.LineError // the first MaxReported of them
}

// MaxReported bounds how many invalid lines are listed; the count is exact.
const MaxReported = 100

// Validate reads every input to the end without publishing anything.
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
