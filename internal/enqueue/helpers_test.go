package enqueue_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/workertest"
	"github.com/jetpost/jetpost/pkg/job"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

var names = workertest.Names()

var streams = workertest.Streams()

// startWorkers runs n in-process workers (internal/workertest).
func startWorkers(t *testing.T, ns *server.Server, n int) (stop func()) {
	t.Helper()
	return workertest.Start(t, ns.ClientURL(), workertest.Options{Workers: n, MaxAttempts: 3, Names: names, Streams: streams})
}

func connect(t *testing.T, ns *server.Server, opts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.Setup(context.Background(), js, names, streams); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// jobsLeft counts the jobs not acked yet. A job is acked after its
// result and its completion marker are stored: at 0, a re-run finds every
// marker.
func jobsLeft(t *testing.T, ns *server.Server) uint64 {
	t.Helper()
	// No Setup (connect's): this is polled.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// lines returns n JSON Lines jobs for url, ids job-00000…
func lines(n int, url string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"id":"job-%05d","url":%q}`+"\n", i, fmt.Sprintf("%s?n=%d", url, i))
	}
	return b.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func gz(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// run is enqueue's flow, as cmd/enqueue wires it: validate and spool, then
// publish with completion markers looked up, then (wait) collect every
// result, including those of earlier runs.
type runOpts struct {
	batch string
	wait  bool
	force bool
	// afterPublish runs between publishing and collecting.
	afterPublish func()
	// enqueuedAt, if set, replaces now as the jobs' enqueue time.
	enqueuedAt time.Time
}

type runOutcome struct {
	rep     *enqueue.PublishReport
	summary *enqueue.Summary
	results map[string]*job.Result
}

func enqueueRun(t *testing.T, ns *server.Server, o runOpts, ins []*enqueue.Input) runOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	now := time.Now().UTC()
	if !o.enqueuedAt.IsZero() {
		now = o.enqueuedAt
	}
	v, err := enqueue.Prepare(ins, func(j *job.Job) { j.Batch, j.EnqueuedAt = o.batch, now })
	if err != nil {
		t.Fatal(err)
	}
	defer v.Spool.Close()
	if v.Invalid > 0 {
		t.Fatalf("%d invalid lines: %v", v.Invalid, v.Errors)
	}
	nc, js := connect(t, ns, jetstream.WithPublishAsyncMaxPending(256), jetstream.WithPublishAsyncTimeout(10*time.Second))
	defer nc.Close()
	var done *queue.DoneIndex
	if !o.force {
		if err := queue.SetupDone(ctx, js, names, streams); err != nil {
			t.Fatal(err)
		}
		done = queue.NewDoneIndex(js, names)
	}
	var out runOutcome
	var col *enqueue.Collector
	var key func(string) uint64
	waitErr := make(chan error, 1)
	published := make(chan *enqueue.PublishReport, 1)
	if o.wait {
		col = enqueue.NewCollector()
		var mu sync.Mutex
		out.results = map[string]*job.Result{}
		col.OnResult = func(r *job.Result) {
			mu.Lock()
			defer mu.Unlock()
			if _, dup := out.results[r.ID]; dup {
				t.Errorf("second result for job %s", r.ID)
			}
			out.results[r.ID] = r
		}
		if err := v.ExpectAll(col); err != nil {
			t.Fatal(err)
		}
		if done != nil {
			if col.After, err = queue.ResultsLastSeq(ctx, js, names); err != nil {
				t.Fatal(err)
			}
		}
		key = col.Key
		go func() { waitErr <- col.Collect(ctx, js, names, o.batch, done, published) }()
	}
	popts := enqueue.PublishOptions{Batch: o.batch, Names: names, Window: 64, Done: done, Key: key}
	if o.force {
		popts.ForceToken = "t" + fmt.Sprint(time.Now().UnixNano())
	}
	rep, err := enqueue.Publish(ctx, js, v.Spool, popts)
	if err != nil {
		t.Fatal(err)
	}
	out.rep = rep
	if len(rep.Failed) > 0 || rep.LookupErr != nil {
		t.Fatalf("publish: %d failed (%v), lookup error %v", len(rep.Failed), rep.Failed, rep.LookupErr)
	}
	if o.afterPublish != nil {
		o.afterPublish()
	}
	if !o.wait {
		return out
	}
	published <- rep
	if err := <-waitErr; err != nil {
		t.Fatalf("collecting: %v (%d pending)", err, col.Pending())
	}
	col.Summary.Finish(time.Second)
	out.summary = &col.Summary
	return out
}

func fileInputs(t *testing.T, paths ...string) []*enqueue.Input {
	t.Helper()
	ins, err := enqueue.OpenInputs(paths, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ins
}
