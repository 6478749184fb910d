package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
)

// The scale scenario (issue 17, point 4): one large batch at 0 ms latency,
// enqueued by the real `enqueue`, processed by real workers, read back by
// `enqueue results`. It reports whether every job got exactly one result,
// whether the rate held from the first tenth of the results to the last,
// whether the workers' memory stayed flat, and what the broker kept on disk.

const (
	scaleInflight = 256
	scaleBatch    = "scale"
	// scaleStall ends a run whose results stopped coming: a stuck run is a
	// failure to report, not a wait for the whole benchmark.
	scaleStall = 2 * time.Minute
)

// scaleSample is what the scenario looks at every second.
type scaleSample struct {
	at        time.Time
	results   uint64 // messages in the results stream
	jobs      uint64 // messages left in the jobs stream
	workerRSS int64  // the workers' VmRSS, summed
	brokerRSS int64  // this process's VmRSS: the embedded broker
	disk      int64  // the broker's store directory
	// The batch's consumer: jobs delivered and not acked (running, or
	// parked by a delayed NAK), and the stream sequence below which every
	// job is acked.
	ackPending, ackFloor uint64
	consumer             bool // the consumer was read (it is gone once drained)
}

// scaleRun is one run of the scenario.
type scaleRun struct {
	n, workers int
	start      time.Time // enqueue started
	done       time.Time // the results stream held n results
	enq        enqueueRun
	enqHWM     int64
	samples    []scaleSample
	cpu        jpRun // CPU of workers, broker and target meanwhile
	res        scaleResults
	readBack   readBack
	streams    []storeUse
	diskEnd    int64
	// Jobs the workers' host limit refused (each a delayed NAK and a
	// redelivery: broker work a job costs besides its own).
	refused float64
	// timedOut: -scale-deadline passed first; the figures are of the
	// results stored by then. oldest is the first job still in the
	// stream then, and when it was published.
	timedOut bool
	oldest   string
}

// storeUse is one stream (or bucket) at the end of the run.
type storeUse struct {
	name        string
	msgs, bytes uint64
}

// readBack is what `enqueue results` took to write the whole batch.
type readBack struct {
	wall  time.Duration
	cpu   time.Duration
	hwm   int64
	lines int
}

func (b *bench) scale(ctx context.Context) error {
	n := b.scaleSize()
	tgt, err := startTarget(ctx, b.binDir)
	if err != nil {
		return err
	}
	defer tgt.stop()
	br, err := startBroker(b.tmp)
	if err != nil {
		return err
	}
	defer br.stop()
	b.logf("scale: %s jobs, 0 ms, %d worker(s) × %d", thousands(n), b.scaleWorkers, scaleInflight)
	file, err := writeJobs(b.tmp, scaleBatch, scaleBatch, tgt.url, n)
	if err != nil {
		return err
	}
	ws, err := b.startWorkers(ctx, br.URL, b.scaleWorkers, inflightEnv(scaleInflight))
	defer stopWorkers(ws)
	if err != nil {
		return err
	}
	r := &scaleRun{n: n, workers: b.scaleWorkers}
	if err := b.scaleProcess(ctx, br, ws, tgt, file, r); err != nil {
		return err
	}
	r.refused = workerCounter(ws, "jetpost_host_refused_total")
	if err := b.brokerHeap(); err != nil {
		return err
	}
	stopWorkers(ws)
	if r.res, err = readScaleResults(ctx, br.URL, scaleBatch, n); err != nil {
		return fmt.Errorf("reading results back: %w", err)
	}
	if r.streams, err = storeUses(ctx, br.URL); err != nil {
		return err
	}
	if !r.timedOut {
		if r.readBack, err = b.enqueueResults(ctx, br.URL, scaleBatch); err != nil {
			return err
		}
	}
	r.diskEnd = diskUse(br.Dir())
	b.scaleRows(r)
	return r.check()
}

// scaleSize is -scale-jobs, or 1,000,000 when scale runs alone and 100,000
// beside other scenarios (and with -quick).
func (b *bench) scaleSize() int {
	switch {
	case b.scaleJobs > 0:
		return b.scaleJobs
	case b.quick || !b.scaleAlone:
		return 100_000
	}
	return 1_000_000
}

// scaleProcess enqueues the batch and samples the run every second until
// the results stream holds a result per job.
func (b *bench) scaleProcess(ctx context.Context, br *broker, ws []*workerProc, tgt *demoTarget, file string, r *scaleRun) error {
	nc, err := nats.Connect(br.URL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if err := tgt.reset(); err != nil {
		return err
	}
	mark := markCPU(ws, tgt)
	p, err := b.startEnqueue(br.URL, file, scaleBatch, false)
	if err != nil {
		return err
	}
	r.start = p.start
	enqWatch := watchHWM(p.pid(), 250*time.Millisecond)
	enqDone := p.done
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastMove, lastCount := time.Now(), uint64(0)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-enqDone:
			enqDone = nil
			r.enqHWM = enqWatch.stop()
			if r.enq, err = finishEnqueue(ctx, p); err != nil || r.enq.exit != 0 {
				return fmt.Errorf("enqueue exited %d: %v\n%s", r.enq.exit, err, p.output())
			}
			b.logf("  enqueue published %s jobs in %s (peak RSS %s)", thousands(r.n), ms(r.enq.publish), mb(r.enqHWM))
		case <-tick.C:
		}
		s := sampleScale(ctx, js, ws, br.Dir())
		r.samples = append(r.samples, s)
		if s.results != lastCount {
			lastMove, lastCount = s.at, s.results
			if len(r.samples)%15 == 0 {
				b.logf("  %s of %s results; worker RSS %s, broker RSS %s, store %s", thousands(int(s.results)), thousands(r.n), mb(s.workerRSS), mb(s.brokerRSS), mb(s.disk))
			}
		}
		if enqDone == nil && s.results >= uint64(r.n) {
			r.done = s.at
			r.cpu.enq.wall = r.done.Sub(r.start)
			mark.since(&r.cpu, ws, tgt)
			return nil
		}
		if b.scaleDeadline > 0 && s.at.Sub(r.start) > b.scaleDeadline && enqDone == nil {
			// A run that does not finish in time is a figure too.
			r.timedOut, r.done = true, s.at
			r.cpu.enq.wall = r.done.Sub(r.start)
			mark.since(&r.cpu, ws, tgt)
			r.oldest = oldestJob(ctx, js)
			b.logf("  -scale-deadline %s passed: %d of %d results; oldest job left %s", b.scaleDeadline, s.results, r.n, r.oldest)
			return nil
		}
		if s.at.Sub(lastMove) > scaleStall {
			return fmt.Errorf("no result stored for %s: %d of %d results, %d jobs left in the stream", scaleStall, s.results, r.n, s.jobs)
		}
	}
}

// sampleScale reads the streams' counts, the processes' memory and the
// store's disk use; a failed read leaves its figure at zero.
func sampleScale(ctx context.Context, js jetstream.JetStream, ws []*workerProc, dir string) scaleSample {
	s := scaleSample{at: time.Now()}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if st, err := js.Stream(cctx, names.ResultsStream()); err == nil {
		s.results = st.CachedInfo().State.Msgs
	}
	if st, err := js.Stream(cctx, names.JobsStream()); err == nil {
		s.jobs = st.CachedInfo().State.Msgs
	}
	for _, w := range ws {
		if rss, err := procStatusBytes(w.p.pid(), "VmRSS"); err == nil {
			s.workerRSS += rss
		}
	}
	if c, err := js.Consumer(cctx, names.JobsStream(), names.BatchConsumer(names.JobSubject(scaleBatch))); err == nil {
		s.ackPending, s.ackFloor, s.consumer = uint64(c.CachedInfo().NumAckPending), c.CachedInfo().AckFloor.Stream, true
	}
	s.brokerRSS, _ = procStatusBytes(0, "VmRSS")
	s.disk = diskUse(dir)
	return s
}

// oldestJob names the first job left in the jobs stream and when it was
// published ("" if none).
func oldestJob(ctx context.Context, js jetstream.JetStream) string {
	st, err := js.Stream(ctx, names.JobsStream())
	if err != nil || st.CachedInfo().State.Msgs == 0 {
		return ""
	}
	m, err := st.GetMsg(ctx, st.CachedInfo().State.FirstSeq)
	if err != nil {
		return ""
	}
	var j struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(m.Data, &j)
	return fmt.Sprintf("%s (stream seq %d, published %s before the deadline)", j.ID, m.Sequence, time.Since(m.Time).Round(time.Second))
}

// storeUses lists every stream (buckets are streams too) with its size.
func storeUses(ctx context.Context, url string) ([]storeUse, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	var out []storeUse
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		out = append(out, storeUse{name: info.Config.Name, msgs: info.State.Msgs, bytes: info.State.Bytes})
	}
	if err := l.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b storeUse) int { return int(b.bytes) - int(a.bytes) })
	return out, nil
}

// enqueueResults runs `enqueue results BATCH --out FILE`, as a user reads a
// finished batch back, and counts the lines it wrote.
func (b *bench) enqueueResults(ctx context.Context, natsURL, batch string) (readBack, error) {
	var rb readBack
	out := b.tmp + "/" + batch + "-results.jsonl"
	env := append(benchkit.CleanEnv(), "JETPOST_NATS_URL="+natsURL, "JETPOST_LOG_LEVEL=warn")
	p, err := startProc("enqueue results", b.binDir+"/enqueue", []string{"results", batch, "--out", out, "--quiet"}, env, nil)
	if err != nil {
		return rb, err
	}
	w := watchHWM(p.pid(), 100*time.Millisecond)
	err = p.wait(ctx)
	rb.hwm = w.stop()
	rb.wall = p.end.Sub(p.start)
	rb.cpu, _ = p.rusage()
	if err != nil {
		return rb, fmt.Errorf("enqueue results: %w\n%s", err, p.output())
	}
	rb.lines, err = countLines(out)
	return rb, err
}

// check fails the run unless every job has exactly one result.
func (r *scaleRun) check() error {
	res := r.res
	if r.timedOut {
		// Unfinished is reported as such; a second result never is fine.
		if res.duplicates > 0 || res.foreign > 0 {
			return errors.New(res.problem(res.distinct))
		}
		return nil
	}
	if res.distinct == r.n && res.duplicates == 0 && res.foreign == 0 && r.readBack.lines == r.n {
		return nil
	}
	return errors.New(res.problem(r.n) + fmt.Sprintf("; `enqueue results` wrote %d lines", r.readBack.lines))
}

// brokerHeap writes this process's heap profile (the embedded broker's
// memory, at the end of the batch) into -heap's directory, if given.
func (b *bench) brokerHeap() error {
	if b.heapDir == "" {
		return nil
	}
	if err := os.MkdirAll(b.heapDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(b.heapDir, "broker-heap.pprof")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	b.logf("  broker heap profile: %s (go tool pprof -top -sample_index=inuse_space %s)", path, path)
	return f.Close()
}
