package enqueue

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
)

func TestIDSetStates(t *testing.T) {
	seed := maphash.MakeSeed()
	var s idSet
	const n = 10000
	for i := range n {
		s.set(maphash.String(seed, fmt.Sprint(i)), statePending)
	}
	if s.len() != n {
		t.Fatalf("len %d, want %d", s.len(), n)
	}
	for i := 0; i < n; i += 2 {
		s.set(maphash.String(seed, fmt.Sprint(i)), stateCounted)
	}
	for i := range n {
		st, ok := s.get(maphash.String(seed, fmt.Sprint(i)))
		want := statePending
		if i%2 == 0 {
			want = stateCounted
		}
		if !ok || st != want {
			t.Fatalf("id %d: state %d ok %v, want %d", i, st, ok, want)
		}
	}
	if _, ok := s.get(maphash.String(seed, "absent")); ok {
		t.Error("an absent id is found")
	}
	// Hashes whose state bits are all there is still work.
	for _, h := range []uint64{0, 1, 2, 3, 4} {
		s.set(h, stateMissing)
		if st, ok := s.get(h); !ok || st != stateMissing {
			t.Errorf("hash %d: %d %v", h, st, ok)
		}
	}
}

// Reserved up front, the set does not grow: 1e6 ids in about 10 MB.
func TestIDSetReserveIsExact(t *testing.T) {
	var s idSet
	s.reserve(1_000_000)
	size := len(s.slots)
	for i := range uint64(1_000_000) {
		s.set(i*0x9E3779B97F4A7C15, statePending)
	}
	if len(s.slots) != size {
		t.Errorf("grew from %d to %d slots", size, len(s.slots))
	}
	if bytes := size * 8; bytes > 11<<20 {
		t.Errorf("%d bytes for a million ids", bytes)
	}
}

func TestSpoolRoundTrip(t *testing.T) {
	sp, err := newSpool()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for i := range 1000 {
		if err := sp.write(fmt.Sprintf("id-%d", i), job.Fingerprint{byte(i), byte(i >> 8)}, []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.finish(); err != nil {
		t.Fatal(err)
	}
	for pass := range 2 { // read twice: each reader starts over
		r, err := sp.reader()
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			rec, err := r.next(pass == 1)
			id, data := rec.id, rec.data
			if errors.Is(err, io.EOF) {
				if i != 1000 {
					t.Fatalf("pass %d: %d records", pass, i)
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if id != fmt.Sprintf("id-%d", i) || rec.fp != (job.Fingerprint{byte(i), byte(i >> 8)}) || (pass == 0 && string(data) != fmt.Sprintf(`{"n":%d}`, i)) {
				t.Fatalf("record %d: %q %q", i, id, data)
			}
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Not on a terminal: a status line now and then, with the rate and the
// time left; Printf lines go to the same output.
func TestProgressLines(t *testing.T) {
	var out syncBuffer
	p := NewProgress(&out, ProgressLines, 10, true)
	p.every = 5 * time.Millisecond
	for range 4 {
		p.published()
	}
	p.completedEarlier()
	p.Outcome(true)
	p.Outcome(false)
	p.Start()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "jobs/s, ETA") {
		if time.Now().After(deadline) {
			t.Fatalf("no status line with a rate and ETA: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.Printf("note %d\n", 1)
	p.Finish()
	p.Finish()
	got := out.String()
	if !strings.Contains(got, "progress: published 4/10 (1 done before), ok 1, failed 1; ") || !strings.Contains(got, "note 1\n") {
		t.Errorf("output: %q", got)
	}
	// Quiet and nil show nothing and do not fail.
	NewProgress(&out, ProgressQuiet, 1, false).Finish()
	var none *Progress
	none.published()
	none.Outcome(false)
	none.Start()
	none.Finish()
}
