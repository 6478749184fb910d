package job

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"
)

// benchInput is 1,000 lines like real files: most without an id, some
// repeated, bodies of a few hundred bytes (JSON bodies and forms), some
// params.
func benchInput() []byte {
	var b bytes.Buffer
	for i := range 1000 {
		switch {
		case i%10 == 0:
			fmt.Fprintf(&b, `{"id":"order-%d","method":"POST","url":"https://api.example.com/v2/orders","headers":{"Authorization":"Bearer abcdef0123456789","Content-Type":"application/json"},"json":{"order":%d,"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"leave at the door"},"timeout":"20s"}`+"\n", i, i)
		case i%7 == 0:
			b.WriteString(`{"url":"https://status.example.com/ping","params":{"v":2,"probe":"jetpost"}}` + "\n")
		default:
			fmt.Fprintf(&b, `{"method":"PUT","url":"https://api.example.com/v2/items/%d","headers":{"Authorization":"Bearer abcdef0123456789"},"data":{"name":"item %d","price":12.50,"tags":["a","b","c"]},"callback":"https://hooks.example.com/jetpost","reply_to":"acme.results"}`+"\n", i, i)
		}
	}
	return b.Bytes()
}

func BenchmarkDecodeJSONL(b *testing.B) {
	in := benchInput()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		d := NewDecoder(bytes.NewReader(in), "bench.jsonl")
		n := 0
		for {
			_, err := d.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != 1000 {
			b.Fatalf("decoded %d jobs", n)
		}
	}
}

func BenchmarkDecodeArray(b *testing.B) {
	lines := bytes.Split(bytes.TrimSpace(benchInput()), []byte("\n"))
	in := append([]byte("[\n"), bytes.Join(lines, []byte(",\n"))...)
	in = append(in, "\n]\n"...)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		d := NewDecoder(bytes.NewReader(in), "bench.json")
		for {
			_, err := d.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func benchJob() *Job {
	return &Job{
		ID:         "h-b1e84d21dec243147d29-2",
		Batch:      "2025-11-27_orders",
		Method:     "POST",
		URL:        "https://api.example.com/v2/orders",
		Params:     []byte(`{"dry_run": "0", "tag": ["a", "b"]}`),
		Headers:    map[string]string{"Authorization": "Bearer abcdef0123456789", "Content-Type": "application/json"},
		JSON:       []byte(`{"order":17,"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"leave at the door"}`),
		Callback:   "https://hooks.example.com/jetpost",
		ReplyTo:    "acme.results",
		Timeout:    Duration(20 * time.Second),
		EnqueuedAt: time.Date(2025, 11, 27, 10, 47, 0, 0, time.UTC),
	}
}

func BenchmarkEncodeJob(b *testing.B) {
	j := benchJob()
	b.ReportAllocs()
	for b.Loop() {
		out, err := Encode(j)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(out)))
	}
}

func BenchmarkEncodeResult(b *testing.B) {
	r := &Result{
		ID: "h-b1e84d21dec243147d29-2", Batch: "2025-11-27_orders", OK: true, Status: 201, Attempts: 2,
		Body:       `{"id":"ord_8812","status":"accepted","links":{"self":"https://api.example.com/v2/orders/ord_8812"}}`,
		DurationMS: 184, Worker: "worker-3f9a", FinishedAt: time.Date(2025, 11, 27, 10, 47, 3, 120000000, time.UTC),
		Callback: &CallbackResult{OK: true, Status: 204},
	}
	b.ReportAllocs()
	for b.Loop() {
		out, err := EncodeResult(r)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(out)))
	}
}

// BenchmarkRequestOfFormJob is what a worker computes per attempt of a job
// with a form body and params: the body and the URL as sent.
func BenchmarkRequestOfFormJob(b *testing.B) {
	j := benchJob()
	j.JSON, j.Data = nil, []byte(`{"name":"item 17","price":12.50,"tags":["a","b","c"],"note":"leave at the door"}`)
	b.ReportAllocs()
	for b.Loop() {
		body, _ := j.Body()
		if len(body) == 0 || len(j.RequestURL()) == 0 {
			b.Fatal("empty")
		}
	}
}
