package main

import (
	"strings"
	"testing"
)

func TestReplaceBlockKeepsOtherSections(t *testing.T) {
	doc, err := replaceBlock("", "table 1\n", benchSection)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc, "# Benchmarks\n") || !strings.Contains(doc, "table 1\n"+endMarker) {
		t.Fatalf("new file:\n%s", doc)
	}
	doc = "# Benchmarks\n\n## Theirs\nkeep me\n" + doc[len("# Benchmarks\n"):] + "\n## Also theirs\nand me\n"
	doc2, err := replaceBlock(doc, "table 2\n", benchSection)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Theirs\nkeep me\n", "table 2\n" + endMarker, "## Also theirs\nand me\n"} {
		if !strings.Contains(doc2, want) {
			t.Errorf("missing %q in:\n%s", want, doc2)
		}
	}
	if strings.Contains(doc2, "table 1") || strings.Count(doc2, "<!-- bench:begin") != 1 {
		t.Errorf("old block not replaced exactly once:\n%s", doc2)
	}
	if _, err := replaceBlock(beginMarker+"\nno end", "x", benchSection); err == nil {
		t.Error("a begin marker without an end must be refused")
	}
}

func TestScaleSectionBesideBenchSection(t *testing.T) {
	doc, err := replaceBlock("", "bench 1\n", benchSection)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"scale 1\n", "scale 2\n"} {
		if doc, err = replaceBlock(doc, r, scaleSection); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(doc, "bench 1\n"+endMarker) || !strings.Contains(doc, "scale 2\n"+scaleSection.end) ||
		strings.Contains(doc, "scale 1") || strings.Count(doc, scaleSection.heading) != 1 {
		t.Errorf("sections mixed up:\n%s", doc)
	}
}
