package enqueue

import "math/bits"

// idSet maps 64-bit job id hashes to a small state. It is an open-addressing
// table of single words, the state in the low three bits of the hash: 8
// bytes per slot, about 10 bytes per id at its load factor, a third of what
// a Go map of the same content takes. Sized up front (reserve) it never
// grows, so a million ids cost a flat 10 MB. A collision of two ids' 61-bit
// hashes in one batch has odds of about n²/2⁶² (2e-7 for a million ids).
type idSet struct {
	slots []uint64
	n     int
}

// States of an id in the collector.
const (
	statePending          uint64 = iota // expected, no result yet
	stateCounted                        // its result was counted
	stateUnpublished                    // the broker refused it: no result will come
	stateMissing                        // completed by an earlier run, result no longer stored
	stateCompletedEarlier               // expected from an earlier run's stored results
)

const (
	stateMask = 7
	maxLoad   = 0.8
)

func setKey(h uint64) uint64 {
	k := h &^ stateMask
	if k == 0 {
		k = stateMask + 1 // 0 marks an empty slot
	}
	return k
}

// reserve sizes the table for n ids in all.
func (s *idSet) reserve(n int) {
	want := int(float64(n)/maxLoad) + 1
	if want > len(s.slots) {
		s.resize(want)
	}
}

func (s *idSet) resize(size int) {
	old := s.slots
	s.slots = make([]uint64, max(size, 16))
	for _, e := range old {
		if e != 0 {
			s.slots[s.probe(e&^stateMask)] = e
		}
	}
}

// probe returns the slot of key k, or the empty slot where it would go.
func (s *idSet) probe(k uint64) int {
	// Multiply-shift maps the hash onto any table size, not only powers
	// of two, so the table can be sized exactly.
	i, _ := bits.Mul64(k, uint64(len(s.slots)))
	for {
		e := s.slots[i]
		if e == 0 || e&^stateMask == k {
			return int(i)
		}
		i++
		if i == uint64(len(s.slots)) {
			i = 0
		}
	}
}

// get returns the state of h and whether it is in the set.
func (s *idSet) get(h uint64) (uint64, bool) {
	if len(s.slots) == 0 {
		return 0, false
	}
	e := s.slots[s.probe(setKey(h))]
	return e & stateMask, e != 0
}

// set puts h in state st, adding it if needed.
func (s *idSet) set(h uint64, st uint64) {
	if float64(s.n+1) > maxLoad*float64(len(s.slots)) {
		s.resize(max(2*len(s.slots), 16))
	}
	k := setKey(h)
	i := s.probe(k)
	if s.slots[i] == 0 {
		s.n++
	}
	s.slots[i] = k | st
}

// replaceAll puts every id in state from into state to and returns how many
// it changed.
func (s *idSet) replaceAll(from, to uint64) int {
	n := 0
	for i, e := range s.slots {
		if e != 0 && e&stateMask == from {
			s.slots[i] = e&^stateMask | to
			n++
		}
	}
	return n
}
