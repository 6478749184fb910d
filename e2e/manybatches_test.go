package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
)

const (
	manyBatches   = 1000
	manyJobs      = 3  // per batch
	manyProcesses = 10 // batches enqueued by the enqueue binary; the rest in goroutines
	manyRoutines  = 10
)

// Issue 15, scale: 1,000 small batches enqueued at once, from enqueue
// processes and from goroutines running enqueue's own Run, are all active
// together (the target holds every request until the last batch is
// published), all complete with exactly one result per job, and leave no
// per-batch state on the broker behind them.
func TestThousandConcurrentSmallBatches(t *testing.T) {
	ns := natstest.RunServer(t)
	held := &gate{}
	held.shut()
	release := held.open
	tg := target.New(target.Options{Latency: 5 * time.Millisecond, OnRequest: held.pass})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	defer release() // before srv.Close, which waits for held requests
	for i := range 2 {
		w := start(t, "worker", workerEnv(ns.ClientURL(), fmt.Sprintf("JETPOST_WORKER_ID=many%d", i+1),
			"JETPOST_MAX_INFLIGHT=20", "JETPOST_ADAPTIVE_CONCURRENCY=false", "JETPOST_REQUEST_TIMEOUT=5m"))
		w.waitLine("consuming jobs")
	}
	enqueueMany(t, ns.ClientURL(), srv.URL)

	_, js := connect(t, ns.ClientURL())
	ctx := context.Background()
	n := queue.NewNames("jetpost")
	jobs, err := js.Stream(ctx, n.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := jobs.Info(ctx, jetstream.WithSubjectFilter(n.JobSubject(">")))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != manyBatches {
		t.Fatalf("%d batches with jobs waiting once all were published, want %d", len(info.State.Subjects), manyBatches)
	}
	t.Logf("all %d batches published and waiting; %d batch consumers so far", manyBatches, len(batchConsumers(t, jobs)))
	released := time.Now()
	release()

	checkManyResults(t, js, n)
	t.Logf("every result stored %v after the target let requests through", time.Since(released).Round(time.Millisecond))
	if st := tg.Stats(); st.Requests != manyBatches*manyJobs || st.Duplicates != 0 {
		t.Errorf("target saw %d requests (%d duplicates) for %d jobs", st.Requests, st.Duplicates, manyBatches*manyJobs)
	}
	checkBatchStateCleaned(t, js, jobs, n)
}

// enqueueMany publishes the batches m0000…m0999, manyJobs jobs each: the
// first manyProcesses through enqueue processes, the others through
// enqueue.Run in manyRoutines goroutines, all at once.
func enqueueMany(t *testing.T, natsURL, url string) {
	t.Helper()
	var wg sync.WaitGroup
	procs := make([]*proc, manyProcesses)
	for i := range manyProcesses {
		batch := fmt.Sprintf("m%04d", i)
		procs[i] = start(t, "enqueue", nil, "--nats", natsURL, "--batch", batch, batchJobs(t, batch, manyJobs, url))
	}
	errs := make(chan error, manyRoutines)
	for g := range manyRoutines {
		files := map[string]string{}
		for i := manyProcesses + g; i < manyBatches; i += manyRoutines {
			batch := fmt.Sprintf("m%04d", i)
			files[batch] = batchJobs(t, batch, manyJobs, url)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for batch, file := range files {
				if err := enqueueRun(natsURL, batch, file); err != nil {
					errs <- fmt.Errorf("batch %s: %w", batch, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, p := range procs {
		if code := p.wait(); code != 0 {
			t.Errorf("enqueue m%04d exit %d:\n%s", i, code, p.output())
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// enqueueRun is what `enqueue --batch BATCH FILE` runs, in this process.
func enqueueRun(natsURL, batch, file string) error {
	ins, err := enqueue.OpenInputs([]string{file}, nil)
	if err != nil {
		return err
	}
	_, err = enqueue.Run(context.Background(), enqueue.Options{
		Inputs: ins, Batch: batch, Window: enqueue.DefaultWindow, Progress: enqueue.ProgressQuiet,
		Names: queue.NewNames("jetpost"),
		// enqueue's defaults (JETPOST_REPLICAS, _DEDUP_WINDOW, _RESULTS_MAX_AGE).
		Streams: queue.StreamConfig{Replicas: 1, DedupWindow: 30 * time.Minute, ResultsMaxAge: 168 * time.Hour},
		Connect: func() (*nats.Conn, error) { return nats.Connect(natsURL) },
		Log:     zerolog.Nop(), Stdout: io.Discard, Stderr: io.Discard,
	})
	return err
}

// checkManyResults waits for every result, then reads them all: each
// batch has exactly one ok result for each of its jobs.
func checkManyResults(t *testing.T, js jetstream.JetStream, n queue.Names) {
	t.Helper()
	ctx := context.Background()
	results, err := js.Stream(ctx, n.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	const want = manyBatches * manyJobs
	if !waitFor(t, "every result", 5*time.Minute, func() (bool, string) {
		info, err := results.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs >= want, fmt.Sprintf("%d of %d results stored", info.State.Msgs, want)
	}) {
		t.FailNow()
	}
	cons, err := results.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]map[string]bool{}
	for read := 0; read < want; {
		msgs, err := cons.Fetch(500, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range msgs.Messages() {
			got++
			r, err := job.DecodeResult(m.Data())
			if err != nil {
				t.Fatalf("result %q: %v", m.Data(), err)
			}
			if seen[r.Batch] == nil {
				seen[r.Batch] = map[string]bool{}
			}
			if seen[r.Batch][r.ID] {
				t.Errorf("second result for %s of %s", r.ID, r.Batch)
			}
			seen[r.Batch][r.ID] = true
			if !r.OK {
				t.Errorf("%s of %s: %s", r.ID, r.Batch, r.Error)
			}
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
		if got == 0 {
			t.Fatalf("read %d of %d results", read, want)
		}
		read += got
	}
	if len(seen) != manyBatches {
		t.Errorf("results for %d batches, want %d", len(seen), manyBatches)
	}
	for b, ids := range seen {
		if len(ids) != manyJobs {
			t.Errorf("batch %s: %d results, want %d", b, len(ids), manyJobs)
		}
	}
}

// batchConsumers lists the per-batch consumers on the jobs stream.
func batchConsumers(t *testing.T, jobs jetstream.Stream) []string {
	t.Helper()
	lister := jobs.ConsumerNames(context.Background())
	var out []string
	for name := range lister.Name() {
		if strings.HasPrefix(name, "batch_") || strings.HasPrefix(name, "subject_") {
			out = append(out, name)
		}
	}
	if err := lister.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFor polls cond, a fact about the broker, until it holds or limit
// passes (then the test has failed: false); limit only ends a broken test.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() (bool, string)) bool {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("waiting for %s: still %s after %v", what, state, limit)
			return false
		}
		<-tick.C
	}
}

// checkBatchStateCleaned: once every batch is done, the workers delete the
// per-batch consumers and forget the batches' entries. An entry is kept for
// a linger after its batch's last job (so late jobs of a cancelled batch
// are still cancelled); the entries are aged a day here instead of waiting
// it out, and the workers' next sweep must take every one.
func checkBatchStateCleaned(t *testing.T, js jetstream.JetStream, jobs jetstream.Stream, n queue.Names) {
	t.Helper()
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, n.BatchesBucket())
	if err != nil {
		t.Fatal(err)
	}
	if aged := ageEntries(t, kv, 24*time.Hour); aged != manyBatches {
		t.Errorf("%d batch entries once all were done, want %d (one per batch, until it lingered)", aged, manyBatches)
	}
	waitFor(t, "the batches bucket to empty", 3*time.Minute, func() (bool, string) {
		left := len(bucketKeys(t, kv))
		return left == 0, fmt.Sprintf("%d entries", left)
	})
	// Workers drop a lane within a discovery of its last job; the bound
	// only ends a broken test.
	if !waitFor(t, "the batch consumers to go", 3*time.Minute, func() (bool, string) {
		left := batchConsumers(t, jobs)
		return len(left) == 0, fmt.Sprintf("%d batch consumers", len(left))
	}) {
		for _, name := range batchConsumers(t, jobs) {
			c, err := jobs.Consumer(ctx, name)
			if err != nil {
				t.Errorf("left: %s: %v", name, err)
				continue
			}
			ci := c.CachedInfo()
			t.Errorf("left: %s created %v: pending %d, ack pending %d, waiting pulls %d, inactive threshold %v",
				name, ci.Created.Format(time.StampMilli), ci.NumPending, ci.NumAckPending, ci.NumWaiting, ci.Config.InactiveThreshold)
		}
	}
}

// ageEntries moves every entry's last change back by d (compare and set:
// an entry changed or deleted meanwhile is left as it is) and says how
// many there were.
func ageEntries(t *testing.T, kv jetstream.KeyValue, d time.Duration) int {
	t.Helper()
	ctx := context.Background()
	keys := bucketKeys(t, kv)
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var c queue.BatchControl
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			t.Fatalf("entry %s: %v", k, err)
		}
		c.Updated = c.Updated.Add(-d)
		v, _ := json.Marshal(c)
		if _, err := kv.Update(ctx, k, v, e.Revision()); err != nil {
			t.Logf("entry %s not aged: %v", k, err)
		}
	}
	return len(keys)
}

func bucketKeys(t *testing.T, kv jetstream.KeyValue) []string {
	t.Helper()
	lister, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys
}
