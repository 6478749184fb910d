package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
	"github.com/jetpost/jetpost/internal/target"
)

// writeJobs writes n JSON Lines jobs for baseURL: POSTs with a small JSON
// body, like the files jetpost was written for. It streams, so a million
// jobs cost the benchmark a buffer, not the file's size in memory.
func writeJobs(dir, name, idPrefix, baseURL string, n int) (string, error) {
	path := filepath.Join(dir, name+".jsonl")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 256<<10)
	for i := range n {
		s := strconv.Itoa(i)
		fmt.Fprintf(w, `{"id":"%s-%06d","method":"POST","url":"%s/items/%s","json":{"n":%s}}`+"\n", idPrefix, i, baseURL, s, s)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

// worker is one running worker process and its operations address.
type workerProc struct {
	p    *proc
	addr string
}

func (b *bench) startWorkers(ctx context.Context, natsURL string, n int, env []string) ([]*workerProc, error) {
	return b.startWorkersOf(ctx, "", natsURL, n, env)
}

// startWorkersOf starts n workers of the binary bin: -base's, or this
// tree's if empty.
func (b *bench) startWorkersOf(ctx context.Context, bin, natsURL string, n int, env []string) ([]*workerProc, error) {
	if bin == "" {
		bin = filepath.Join(b.binDir, "worker")
	}
	var ws []*workerProc
	for i := range n {
		addr, err := benchkit.FreeAddr()
		if err != nil {
			return ws, err
		}
		e := append(benchkit.CleanEnv(),
			"JETPOST_NATS_URL="+natsURL,
			"JETPOST_ALLOWED_NETWORKS=127.0.0.0/8",
			"JETPOST_LOG_LEVEL=warn",
			"JETPOST_LOG_FORMAT=json",
			"JETPOST_HTTP_ADDR="+addr,
			fmt.Sprintf("JETPOST_WORKER_ID=bench-w%d", i+1),
		)
		e = append(e, env...)
		e = append(e, b.workerEnv...)
		p, err := startProc(fmt.Sprintf("worker %d", i+1), bin, nil, e, nil)
		if err != nil {
			return ws, err
		}
		ws = append(ws, &workerProc{p: p, addr: addr})
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, w := range ws {
		if err := waitHTTP(rctx, w.p, "http://"+w.addr+"/readyz"); err != nil {
			return ws, err
		}
	}
	return ws, nil
}

func stopWorkers(ws []*workerProc) {
	for _, w := range ws {
		select {
		case <-w.p.done:
		default:
			_ = w.p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, w := range ws {
		w.p.stop(40 * time.Second)
	}
}

// enqueueRun is one `enqueue` process.
type enqueueRun struct {
	p        *proc
	wall     time.Duration
	cpu      time.Duration
	maxRSS   int64
	exit     int
	startup  time.Duration // start → "publishing N jobs" (connected, input validated)
	publish  time.Duration // start → "N published" (every publish acknowledged)
	finished time.Time
}

func (b *bench) startEnqueue(natsURL, file, batch string, wait bool) (*proc, error) {
	// Not --quiet: the stage lines below time startup and publishing.
	args := []string{"--batch", batch}
	if wait {
		args = append(args, "--wait")
	}
	args = append(args, file)
	env := append(benchkit.CleanEnv(), "JETPOST_NATS_URL="+natsURL, "JETPOST_LOG_LEVEL=warn", "JETPOST_LOG_FORMAT=json")
	return startProc("enqueue "+batch, filepath.Join(b.binDir, "enqueue"), args, env, nil)
}

func finishEnqueue(ctx context.Context, p *proc) (enqueueRun, error) {
	err := p.wait(ctx)
	r := enqueueRun{p: p, wall: p.end.Sub(p.start), finished: p.end}
	r.cpu, r.maxRSS = p.rusage()
	if p.cmd.ProcessState != nil {
		r.exit = p.cmd.ProcessState.ExitCode()
	}
	if t := p.lineAt("jobs (validated in"); !t.IsZero() {
		r.startup = t.Sub(p.start)
	}
	if t := p.lineAt(" published in "); !t.IsZero() {
		r.publish = t.Sub(p.start)
	}
	if err != nil && r.exit != 1 {
		return r, fmt.Errorf("%s: %w\n%s", p.name, err, p.output())
	}
	return r, nil
}

// jpSpec is one jetpost run: workers against a target, one batch enqueued
// with --wait.
type jpSpec struct {
	batch    string
	n        int
	workers  int
	env      []string // worker environment on top of the common one
	tgt      *demoTarget
	baseURL  string        // where the jobs go (default tgt.url)
	readFull bool          // read every result back (ok count, longest pause)
	deadline time.Duration // enqueue --wait is stopped after this (default 1 minute)
	// background, if set, runs alongside: e.g. another batch for another host.
	background func(natsURL string) (*proc, error)
	workerBin  string // default: this tree's worker
}

// jpRun is what a jetpost run measured.
type jpRun struct {
	spec        jpSpec
	enq         enqueueRun
	workerCPU   time.Duration // all workers, from ready to the batch's end
	natsCPU     time.Duration // this process (the embedded broker) meanwhile
	targetCPU   time.Duration
	workerHWM   int64 // highest VmHWM of the workers
	workerRSS   int64 // rusage maxrss after exit (cross-check)
	results     resultStats
	target      target.Stats
	bgExit      int
	otherLoad   float64 // cores busy with processes not ours, on average
	timedOut    bool    // enqueue --wait did not finish within the deadline
	workerCount int
}

func (r jpRun) rate() float64 { return float64(r.spec.n) / r.enq.wall.Seconds() }

func (b *bench) runJetpost(ctx context.Context, s jpSpec) (jpRun, error) {
	run := jpRun{spec: s, workerCount: s.workers}
	if s.baseURL == "" {
		s.baseURL = s.tgt.url
	}
	file, err := writeJobs(b.tmp, s.batch, s.batch, s.baseURL, s.n)
	if err != nil {
		return run, err
	}
	br, err := startBroker(b.tmp)
	if err != nil {
		return run, err
	}
	defer br.stop()
	ws, err := b.startWorkersOf(ctx, s.workerBin, br.URL, s.workers, s.env)
	defer stopWorkers(ws)
	if err != nil {
		return run, err
	}
	if s.tgt != nil {
		if err := s.tgt.reset(); err != nil {
			return run, err
		}
	}
	mark := markCPU(ws, s.tgt)

	var bg *proc
	if s.background != nil {
		if bg, err = s.background(br.URL); err != nil {
			return run, err
		}
	}
	p, err := b.startEnqueue(br.URL, file, s.batch, true)
	if err != nil {
		return run, err
	}
	if b.perfDir != "" {
		stopPerf := b.perfRecord(s.batch, ws, p)
		defer stopPerf()
	}
	limit := s.deadline
	if limit <= 0 {
		limit = time.Minute
	}
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	run.enq, err = finishEnqueue(rctx, p)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// A run that does not finish is a figure too: say so and go on
		// with the other scenarios instead of blowing the time budget.
		run.timedOut = true
		run.enq.wall = limit
		err = nil
		s.readFull = false
	}
	if err != nil {
		return run, err
	}
	mark.since(&run, ws, s.tgt)
	if bg != nil {
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if r, err := finishEnqueue(bctx, bg); err == nil {
			run.bgExit = r.exit
			run.otherLoad = max(0, run.otherLoad-r.cpu.Seconds()/run.enq.wall.Seconds())
		}
	}
	stopWorkers(ws)
	for _, w := range ws {
		_, rss := w.p.rusage()
		run.workerRSS = max(run.workerRSS, rss)
	}
	run.results, err = br.readResults(ctx, s.batch, s.readFull)
	if err != nil {
		return run, fmt.Errorf("reading results back: %w", err)
	}
	return run, run.check(s.readFull)
}

// check says what is wrong with a finished run's results; a run that timed
// out is a figure, not an error.
func (r jpRun) check(readFull bool) error {
	s := r.spec
	switch {
	case r.timedOut:
		return nil
	case r.results.stored != uint64(s.n):
		return fmt.Errorf("%s: %d results stored for %d jobs", s.batch, r.results.stored, s.n)
	case readFull && r.results.ok != s.n:
		return fmt.Errorf("%s: %d of %d results ok", s.batch, r.results.ok, s.n)
	}
	return nil
}

// cpuMark is the CPU counters at a run's start.
type cpuMark struct {
	workers         []time.Duration
	nats, busy, tgt time.Duration
}

func markCPU(ws []*workerProc, tgt *demoTarget) cpuMark {
	m := cpuMark{workers: make([]time.Duration, len(ws)), nats: selfCPU(), busy: machineBusy()}
	for i, w := range ws {
		m.workers[i], _ = procCPU(w.p.pid())
	}
	if tgt != nil {
		m.tgt = tgt.cpu()
	}
	return m
}

// since fills in what run used since the mark: broker, target and worker
// CPU, the workers' peak memory, and the load of processes not ours.
func (m cpuMark) since(run *jpRun, ws []*workerProc, tgt *demoTarget) {
	run.natsCPU = selfCPU() - m.nats
	busy := machineBusy() - m.busy
	if tgt != nil {
		run.targetCPU = tgt.cpu() - m.tgt
		run.target, _ = tgt.stats()
	}
	for i, w := range ws {
		c, _ := procCPU(w.p.pid())
		run.workerCPU += c - m.workers[i]
		if h, err := procStatusBytes(w.p.pid(), "VmHWM"); err == nil {
			run.workerHWM = max(run.workerHWM, h)
		}
	}
	ours := run.natsCPU + run.targetCPU + run.workerCPU + run.enq.cpu
	run.otherLoad = max(0, (busy-ours).Seconds()/run.enq.wall.Seconds())
}

// perfRecord samples the worker and enqueue processes of a run with
// perf(1) (a diagnosis aid, not part of the figures: sampling costs CPU).
func (b *bench) perfRecord(batch string, ws []*workerProc, enq *proc) (stop func()) {
	var stops []func()
	rec := func(name string, pid int) {
		out := filepath.Join(b.perfDir, batch+"-"+name+".perf.data")
		cmd := exec.Command("perf", "record", "-F", "997", "-g", "-p", strconv.Itoa(pid), "-o", out)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			b.logf("perf: %v", err)
			return
		}
		stops = append(stops, func() {
			_ = cmd.Process.Signal(syscall.SIGINT)
			_ = cmd.Wait()
		})
	}
	_ = os.MkdirAll(b.perfDir, 0o755)
	for i, w := range ws {
		rec(fmt.Sprintf("worker%d", i+1), w.p.pid())
	}
	rec("enqueue", enq.pid())
	rec("broker", os.Getpid()) // the embedded NATS server lives here
	return func() {
		for _, s := range stops {
			s()
		}
	}
}
