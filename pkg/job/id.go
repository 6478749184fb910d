package job

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
)

// derivedPrefix marks ids that jetpost made up, so a reader of results can
// tell them from ids a user chose.
const derivedPrefix = "h-"

// derivedBytes is how much of the SHA-256 a derived id keeps: 80 bits, so
// that a collision among the lines of even a very large file is out of
// reach (about 4e-13 for a million distinct lines) while ids stay short.
const derivedBytes = 10

type contentKey [derivedBytes]byte

// canonicalKey hashes an entry decoded into interface values with
// UseNumber. Canonical JSON is what encoding/json writes for it: object keys
// sorted, no insignificant white space, strings re-escaped uniformly,
// numbers kept as written (so 1 and 1.0 differ). Key order, spacing and
// escaping therefore do not change a derived id.
func canonicalKey(v any) (contentKey, error) {
	canon, err := json.Marshal(v)
	if err != nil {
		return contentKey{}, fmt.Errorf("deriving id: %w", err)
	}
	sum := sha256.Sum256(canon)
	return contentKey(sum[:derivedBytes]), nil
}

// formatDerived spells the id of the n-th entry (n ≥ 1) with content k.
func formatDerived(k contentKey, n uint32) string {
	b := make([]byte, 0, len(derivedPrefix)+2*derivedBytes+11)
	b = append(b, derivedPrefix...)
	b = hex.AppendEncode(b, k[:])
	if n > 1 {
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(n), 10)
	}
	return string(b)
}

// parseDerived is the inverse of formatDerived. An explicit id of this shape
// could collide with an id the Decoder derives, so it is checked against the
// derived ones too.
func parseDerived(id string) (k contentKey, n uint32, ok bool) {
	const hexLen = 2 * derivedBytes
	if len(id) < len(derivedPrefix)+hexLen || id[:len(derivedPrefix)] != derivedPrefix {
		return k, 0, false
	}
	h := id[len(derivedPrefix) : len(derivedPrefix)+hexLen]
	for i := 0; i < len(h); i++ {
		// Only lower case: formatDerived never writes upper case, and
		// "h-ABC…" is a different id.
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return k, 0, false
		}
	}
	if _, err := hex.Decode(k[:], []byte(h)); err != nil {
		return k, 0, false
	}
	rest := id[len(derivedPrefix)+hexLen:]
	if rest == "" {
		return k, 1, true
	}
	// "-2", "-3"…: no sign, no leading zero, never "-1" or "-0".
	if len(rest) < 2 || rest[0] != '-' || rest[1] == '0' {
		return k, 0, false
	}
	v, err := strconv.ParseUint(rest[1:], 10, 32)
	if err != nil || v < 2 {
		return k, 0, false
	}
	return k, uint32(v), true
}

// idKey is the fixed-size stand-in for an explicit id in the duplicate map:
// 128 bits of SHA-256, so memory per id does not depend on the id's length
// and a false "duplicate" is out of reach.
type idKey [16]byte

func keyOf(id string) idKey {
	sum := sha256.Sum256([]byte(id))
	return idKey(sum[:16])
}

// derivedSeen is what the Decoder remembers of one content hash.
type derivedSeen struct {
	line uint32 // where the content was first seen
	n    uint32 // how many entries had this content so far
}

// ids tracks the ids a Decoder has handed out, so that no two entries of a
// file get the same one. Memory grows with distinct ids, not with their
// length: 20 bytes of key and value per explicit id or distinct content,
// about twice that with map overhead; repeats of the same content cost
// nothing.
type ids struct {
	derived  map[contentKey]derivedSeen
	explicit map[idKey]uint32 // first line
}

// derive assigns the id of an entry with no "id" at line. It only counts; the
// caller checks the result with claimDerived once the entry is otherwise
// valid.
func (s *ids) derive(k contentKey, line int) string {
	if s.derived == nil {
		s.derived = make(map[contentKey]derivedSeen)
	}
	e, seen := s.derived[k]
	if !seen {
		e.line = clampLine(line)
	}
	// Counted even if the entry turns out invalid: identical content is
	// equally invalid, so it cannot shift the numbering of valid entries.
	if e.n < ^uint32(0) {
		e.n++
	}
	s.derived[k] = e
	return formatDerived(k, e.n)
}

// claimDerived reports whether a derived id is already taken by an explicit
// one.
func (s *ids) claimDerived(id string) error {
	if len(s.explicit) == 0 {
		return nil
	}
	if first, ok := s.explicit[keyOf(id)]; ok {
		return fmt.Errorf(`derived id %q is already the explicit id of line %d; give this entry an "id"`, id, first)
	}
	return nil
}

// claimExplicit records an explicit id, or reports that an earlier entry
// has it.
func (s *ids) claimExplicit(id string, line int) error {
	k := keyOf(id)
	if first, ok := s.explicit[k]; ok {
		return fmt.Errorf("duplicate id %q (first at line %d)", id, first)
	}
	if ck, n, ok := parseDerived(id); ok {
		if e, seen := s.derived[ck]; seen && e.n >= n {
			return fmt.Errorf(`duplicate id %q: it was derived for an entry with no "id" (content first at line %d)`, id, e.line)
		}
	}
	if s.explicit == nil {
		s.explicit = make(map[idKey]uint32)
	}
	s.explicit[k] = clampLine(line)
	return nil
}

// clampLine keeps a line number in the 32 bits the maps store; a file with
// more than four billion lines reports its later first-lines as the maximum.
func clampLine(line int) uint32 {
	if line < 0 {
		return 0
	}
	if uint64(line) > uint64(^uint32(0)) {
		return ^uint32(0)
	}
	return uint32(line)
}
