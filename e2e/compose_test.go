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

// Issue 14, point 7: the compose file allowed every private range to every
// job. It may allow exactly the demo target's fixed address, nothing wider.
func TestComposeAllowsOnlyTheDemoTarget(t *testing.T) {
	data, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var allowed []string
	target := ""
	for _, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		key, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		value = strings.Trim(strings.TrimSpace(value), `"'`)
		switch key {
		case "JETPOST_ALLOWED_NETWORKS":
			allowed = append(allowed, value)
		case "ipv4_address":
			if target != "" {
				t.Fatalf("more than one fixed address (%s, %s): which is the demo target?", target, value)
			}
			target = value
		}
	}
	if target == "" || len(allowed) == 0 {
		t.Fatalf("demo target address %q, allowed networks %q", target, allowed)
	}
	for _, a := range allowed {
		if a != target+"/32" {
			t.Errorf("JETPOST_ALLOWED_NETWORKS: %s, want only the demo target, %s/32", a, target)
		}
	}
	if !strings.Contains(string(data), "demotarget:\n") || !strings.Contains(string(data), "ipv4_address: "+target) {
		t.Error("the fixed address is not the demotarget service's")
	}
}
