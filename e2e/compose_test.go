package e2e

import (
	"os"
	"strings"
	"testing"
)

// The compose topology enqueues a copy of the example file whose URLs point
// at the demotarget service; it must not drift from the original.
func TestComposeExampleMatchesExample(t *testing.T) {
	orig, err := os.ReadFile("../examples/requests.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	compose, err := os.ReadFile("../examples/compose-requests.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(string(orig), "http://127.0.0.1:8088", "http://demotarget:8088")
	if string(compose) != want {
		t.Error("examples/compose-requests.jsonl differs from examples/requests.jsonl with the host replaced; regenerate it:\n" +
			"  sed 's|http://127.0.0.1:8088|http://demotarget:8088|g' examples/requests.jsonl > examples/compose-requests.jsonl")
	}
}
