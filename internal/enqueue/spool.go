package enqueue

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/jetpost/jetpost/pkg/job"
)

// Spool is a temporary file of validated jobs, encoded for the wire: the
// first pass writes it, the second publishes from it. Memory stays flat
// whatever the input size; the disk holds about the size of the input.
type Spool struct {
	f     *os.File
	w     *bufio.Writer
	count int
}

const spoolBuffer = 256 << 10

func newSpool() (*Spool, error) {
	f, err := os.CreateTemp("", "jetpost-enqueue-*.spool")
	if err != nil {
		return nil, fmt.Errorf("creating the spool file: %w", err)
	}
	// Unlinked at once where the system allows it: nothing is left behind,
	// whatever ends the process.
	_ = os.Remove(f.Name())
	return &Spool{f: f, w: bufio.NewWriterSize(f, spoolBuffer)}, nil
}

// write appends one record: uvarint length and bytes of the id, the
// request's fingerprint (fixed size), then length and bytes of the encoded
// job.
func (s *Spool) write(id string, fp job.Fingerprint, data []byte) error {
	var hdr [2 * binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(id)))
	if _, err := s.w.Write(hdr[:n]); err != nil {
		return err
	}
	if _, err := s.w.WriteString(id); err != nil {
		return err
	}
	if _, err := s.w.Write(fp[:]); err != nil {
		return err
	}
	n = binary.PutUvarint(hdr[:], uint64(len(data)))
	if _, err := s.w.Write(hdr[:n]); err != nil {
		return err
	}
	if _, err := s.w.Write(data); err != nil {
		return err
	}
	s.count++
	return nil
}

func (s *Spool) finish() error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("writing the spool file: %w", err)
	}
	return nil
}

// Close removes the spool.
func (s *Spool) Close() {
	_ = s.f.Close()
	_ = os.Remove(s.f.Name())
}

// reader returns a reader from the start of the spool. Only one may be in
// use at a time.
func (s *Spool) reader() (*spoolReader, error) {
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return &spoolReader{r: bufio.NewReaderSize(s.f, spoolBuffer)}, nil
}

type spoolReader struct {
	r     *bufio.Reader
	idBuf []byte
}

// spoolRecord is one job read back from the spool.
type spoolRecord struct {
	id   string
	fp   job.Fingerprint
	data []byte
}

// next returns the next record, or io.EOF. data is freshly allocated (the
// publisher keeps it until the broker has answered); with skipData it is
// nil.
func (r *spoolReader) next(skipData bool) (rec spoolRecord, err error) {
	n, err := binary.ReadUvarint(r.r)
	if err != nil {
		return rec, err // io.EOF at a record boundary: the end
	}
	if uint64(cap(r.idBuf)) < n {
		r.idBuf = make([]byte, n)
	}
	idb := r.idBuf[:n]
	if _, err := io.ReadFull(r.r, idb); err != nil {
		return rec, truncated(err)
	}
	if _, err := io.ReadFull(r.r, rec.fp[:]); err != nil {
		return rec, truncated(err)
	}
	if n, err = binary.ReadUvarint(r.r); err != nil {
		return rec, truncated(err)
	}
	rec.id = string(idb)
	if skipData {
		_, err = r.r.Discard(int(n))
		return rec, truncated(err)
	}
	rec.data = make([]byte, n)
	if _, err := io.ReadFull(r.r, rec.data); err != nil {
		return rec, truncated(err)
	}
	return rec, nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ids calls fn with every job id in the spool, in order.
func (s *Spool) ids(fn func(id string)) error {
	r, err := s.reader()
	if err != nil {
		return err
	}
	for {
		rec, err := r.next(true)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the spool file: %w", err)
		}
		fn(rec.id)
	}
}
