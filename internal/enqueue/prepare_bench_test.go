package enqueue_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetpost/jetpost/internal/enqueue"
)

// BenchmarkPrepare100k is the first pass (decode, validate, fingerprint,
// encode, spool) over 100,000 lines shaped like BENCHMARKS.md's 1M file.
func BenchmarkPrepare100k(b *testing.B) {
	const n = 100_000
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, `{"id":"order-%07d","method":"POST","url":"https://api.example.com/orders/%d","headers":{"Authorization":"Bearer abc123"},"json":{"sku":"A-%d","qty":%d}}`+"\n", i, i, i%100, i%7+1)
	}
	path := filepath.Join(b.TempDir(), "100k.jsonl")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		ins, err := enqueue.OpenInputs([]string{path}, nil)
		if err != nil {
			b.Fatal(err)
		}
		v, err := enqueue.Prepare(ins, nil)
		if err != nil || v.Valid != n {
			b.Fatal(err, v.Valid)
		}
		v.Spool.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/line")
}
