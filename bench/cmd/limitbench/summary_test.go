package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"
)

// TestSummariesAreOneObjectPerCapacityCase: -json prints one line per
// capacity case, none for rate rows, with its fields.
func TestSummariesAreOneObjectPerCapacityCase(t *testing.T) {
	rows := []row{
		{text: "| fleet rate |"},
		{capacity: true, sum: &summary{Scenario: "adaptive", RetryAfter: "date", Workers: 3, Capacity: 0.93, Pct429: 1.1}},
		{capacity: true, sum: &summary{Scenario: "oracle", RetryAfter: "none", Workers: 1, Capacity: 0.97}},
	}
	var buf bytes.Buffer
	if err := writeSummaries(&buf, rows); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, m)
	}
	if len(got) != 2 {
		t.Fatalf("%d lines, want one per capacity case (2)", len(got))
	}
	if got[0]["retry_after"] != "date" || got[0]["workers"] != 3.0 || got[0]["capacity_fraction"] != 0.93 || got[0]["pct_429"] != 1.1 {
		t.Fatalf("first line %v", got[0])
	}
}
