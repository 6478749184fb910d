package job

import (
	"reflect"
	"testing"
)

// FuzzDecodeMessage: whatever a producer publishes, the worker's decode
// does not panic, and what it accepts is a valid job of the subject's
// batch with an upper-case method, which encodes to a message that decodes
// to the same job (what the worker stores in a dead letter re-drives as
// itself).
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"url":"https://a.example/"}`,
		`{"id":"x","method":"post","url":"http://a/?q=1","json":{"sig": "<&>"},"params":{"a":[1,"b"]},"timeout":2.5}`,
		`{"id":"y","batch":"b","url":"http://a/","data":{"k":"v"},"enqueued_at":"2026-12-05T19:00:00Z","rate":5,"source":"f:1","redrive":1}`,
		`{"id":"z","kind":"callback","callback":"http://cb/","result":{"id":"z","batch":"b","ok":true}}`,
		`{"url":"http://a/","batch":"other"}`,
		`not json`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		j, err := DecodeMessage(msg, "b", nil)
		if err != nil {
			return
		}
		if j.Batch != "b" || j.Validate() != nil || asciiUpper(j.Method) != j.Method {
			t.Fatalf("accepted %s as %+v", msg, j)
		}
		wire, err := Encode(j)
		if err != nil {
			t.Fatalf("cannot encode accepted %s: %v", msg, err)
		}
		again, err := DecodeMessage(wire, "b", nil)
		if err != nil {
			t.Fatalf("%s decoded, encoded as %s, refused: %v", msg, wire, err)
		}
		if !reflect.DeepEqual(j, again) {
			t.Fatalf("%s decoded as %+v, encoded as %s, decoded again as %+v", msg, j, wire, again)
		}
	})
}
