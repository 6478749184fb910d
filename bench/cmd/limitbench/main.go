// Command limitbench measures jetpost's host limits end to end: real worker
// processes (built from ./cmd/worker), an embedded NATS server, HTTP targets
// in this process that record every request they receive, and jobs
// published and results read back as enqueue does it (internal/queue):
//
//   - fleet: a fleet-wide rate limit (JETPOST_RATE_LIMITS) with 1 and with
//     3 workers; the rate the target saw against the limit;
//   - batch: the same with the limit given per batch (enqueue --rate);
//   - callback: the fleet-wide limit on the host that receives the jobs'
//     result callbacks (the jobs themselves go to an unlimited host), with
//     3 workers: the rate that host saw;
//   - adaptive: a target that answers 429 above 30 concurrent requests,
//     each taking 50 ms (capacity 600/s), workers with
//     JETPOST_MAX_INFLIGHT=200 and adaptive concurrency (the default): its
//     429s without Retry-After, with "Retry-After: 1" and with an HTTP date
//     (-retry-after), one worker and three sharing the target (-workers);
//   - fixed: the same target and worker with a fixed pool of 200
//     (JETPOST_ADAPTIVE_CONCURRENCY=false), as the seed scripts did;
//   - oracle: a fixed pool of exactly the target's capacity (30): the most
//     this machine's pipeline gets out of the target;
//   - idle: one worker (JETPOST_MAX_INFLIGHT=40), a target answering in
//     50 ms, a batch of 600 jobs, an idle gap (-gap, default 20s), another
//     600; adaptive concurrency on and off (not in the default set: it
//     waits out the gap twice, and -write puts it in a section of its own).
//
// Usage:
//
//	go run ./bench/cmd/limitbench [-scenario fleet,batch,callback,adaptive,fixed,oracle,idle] [-repeat N] [-quick] [-gap D] [-write]
//	    [-retry-after none,seconds,date] [-workers 1,3] [-worker PATH] [-json]
//
// ("fleet1" runs only the one-worker half of "fleet".) -worker runs a worker
// binary built elsewhere (another commit, for before/after figures) instead
// of building ./cmd/worker. -repeat N runs each
// capacity scenario N times and reports the median run. It prints a
// Markdown table; -write also puts it into BENCHMARKS.md between the
// limitbench markers (the rest of the file is left alone).
// -json prints instead one JSON object per line for each capacity case
// (scenario, retry_after, workers, jobs, jobs_per_sec, capacity_fraction,
// requests, pct_429, ok, failed, wall_s, load, and with -repeat every run's
// capacity_fraction and pct_429): the rate scenarios print nothing then.
// LIMITBENCH_WORKER_LOGS=DIR keeps each worker's debug log (every deferral
// with its delay) in DIR/wN.log.
// LIMITBENCH_DEBUG=1 prints, to standard error, the target's arrivals per
// 250 ms of each run and the first worker's host gauges every 250 ms.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "limitbench:", err)
		os.Exit(1)
	}
}

type options struct {
	scenarios []string
	repeat    int
	quick     bool
	write     bool
	md        string
	gap       time.Duration
	// The adaptive scenario's variants: what the target's 429s carry, and
	// how many workers share it.
	retryAfter []string
	workers    []int
	worker     string // a worker binary built elsewhere (another commit), instead of ./cmd/worker
	json       bool   // one line of JSON per capacity case instead of the Markdown table
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := flag.NewFlagSet("limitbench", flag.ContinueOnError)
	sc := fs.String("scenario", "fleet,batch,callback,adaptive,fixed,oracle", "scenarios to run")
	fs.BoolVar(&o.quick, "quick", false, "fewer jobs (a smoke run, not figures)")
	fs.IntVar(&o.repeat, "repeat", 1, "runs of each capacity scenario (adaptive, fixed, oracle, idle); the table shows the median run and lists them all")
	fs.BoolVar(&o.write, "write", false, "write the table into BENCHMARKS.md between the limitbench markers")
	fs.StringVar(&o.md, "md", "BENCHMARKS.md", "file -write updates")
	fs.DurationVar(&o.gap, "gap", 20*time.Second, "the idle scenario's gap between its two batches")
	ra := fs.String("retry-after", "none,seconds,date", "the adaptive scenario's 429s: without Retry-After (none), with Retry-After: 1 (seconds), with an HTTP date (date)")
	fs.StringVar(&o.worker, "worker", "", "run this worker binary (say, one built from another commit) instead of building ./cmd/worker")
	workers := fs.String("workers", "1,3", "the adaptive scenario's worker processes sharing the target")
	fs.BoolVar(&o.json, "json", false, "print one line of JSON per capacity case (adaptive, fixed, oracle) instead of the Markdown table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.scenarios = strings.Split(*sc, ",")
	if err := o.parseAdaptive(*ra, *workers); err != nil {
		return err
	}

	root, err := benchkit.ModuleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "limitbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	worker := o.worker
	if worker == "" {
		bin := filepath.Join(tmp, "bin")
		if err := benchkit.Build(ctx, root, bin, "./cmd/worker"); err != nil {
			return err
		}
		worker = filepath.Join(bin, "worker")
	}
	b := &bench{worker: worker, tmp: tmp, quick: o.quick, loadBefore: benchkit.LoadAvg()}
	if o.repeat > 1 {
		b.repeatFlag = fmt.Sprintf(" -repeat %d", o.repeat)
	}
	var rows []row
	var idle string
	for _, s := range o.scenarios {
		rs, text, err := b.scenario(ctx, strings.TrimSpace(s), o)
		if err != nil {
			return err
		}
		rows = append(rows, rs...)
		if text != "" {
			idle = text
		}
	}
	md := filepath.Join(root, o.md)
	if idle != "" {
		fmt.Print(idle)
		if o.write {
			if err := writeSection(md, idle, idleBegin, idleEnd, idleHeading); err != nil {
				return err
			}
		}
	}
	if len(rows) == 0 {
		return nil
	}
	table := b.table(rows)
	if o.json {
		if err := writeSummaries(os.Stdout, rows); err != nil {
			return err
		}
	} else {
		fmt.Print(table)
	}
	if o.write {
		return writeSection(md, table, beginMarker, endMarker, "## Host limits: fleet-wide rate and adaptive concurrency")
	}
	return nil
}

// scenario runs one scenario: table rows, or for "idle" a section of its own.
func (b *bench) scenario(ctx context.Context, name string, o options) (rows []row, idle string, err error) {
	var r row
	switch name {
	case "idle":
		idle, err = b.idleTable(ctx, o.gap, o.repeat)
		return nil, idle, err
	case "fleet":
		for _, workers := range []int{1, 3} {
			if r, err = b.rate(ctx, workers, rateHost); err != nil {
				return nil, "", err
			}
			rows = append(rows, r)
		}
		return rows, "", nil
	case "fleet1":
		r, err = b.rate(ctx, 1, rateHost)
	case "batch":
		r, err = b.rate(ctx, 3, rateBatch)
	case "callback":
		r, err = b.rate(ctx, 3, rateCallback)
	case "adaptive", "fixed", "oracle":
		for _, s := range capacitySpecs(name, o) {
			if r, err = b.repeatCapacity(ctx, s, o.repeat); err != nil {
				return nil, "", err
			}
			rows = append(rows, r)
		}
		return rows, "", nil
	default:
		return nil, "", fmt.Errorf("unknown scenario %q", name)
	}
	if err != nil {
		return nil, "", err
	}
	return []row{r}, "", nil
}

type bench struct {
	worker, tmp string // the worker binary; a scratch directory
	repeatFlag  string // " -repeat N", as the table's command line says
	quick       bool
	loadBefore  string
}

var names = queue.NewNames("jetpost")

func (b *bench) logf(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }

// rateKind is what a rate scenario limits.
type rateKind int

const (
	rateHost     rateKind = iota // JETPOST_RATE_LIMITS on the jobs' host
	rateBatch                    // enqueue --rate
	rateCallback                 // JETPOST_RATE_LIMITS on the callbacks' host
)

// rate runs a fleet-wide rate limit of 200/s (burst 20) with workers
// worker processes: as a host rule, per batch (enqueue --rate), or as a
// host rule on the host the callbacks go to.
func (b *bench) rate(ctx context.Context, workers int, kind rateKind) (row, error) {
	const limit, burst = 200, 20
	n := 6000
	if b.quick {
		n = 1000
	}
	tg := &recorder{}
	turl, natsURL, stop, err := b.stage(tg)
	if err != nil {
		return row{}, err
	}
	defer stop()

	env := []string{"JETPOST_MAX_INFLIGHT=64"}
	batchRate := 0.0
	name := fmt.Sprintf("fleet rate, %d worker", workers)
	if workers > 1 {
		name += "s"
	}
	jobURL, callback := turl, ""
	switch kind {
	case rateBatch:
		batchRate = limit
		name = fmt.Sprintf("batch rate (enqueue --rate), %d workers", workers)
	case rateCallback:
		// The jobs go to a host without limits; their callbacks to the
		// recorded one.
		api, apiURL, err := serve(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		if err != nil {
			return row{}, err
		}
		defer api.Close()
		jobURL, callback = apiURL, turl+"/hook"
		name = fmt.Sprintf("callbacks, fleet rate on their host, %d workers", workers)
		fallthrough
	default:
		env = append(env, fmt.Sprintf("JETPOST_RATE_LIMITS=%s=%d/s:%d", strings.TrimPrefix(turl, "http://"), limit, burst))
	}
	b.logf("%s: %d jobs at %d/s ...", name, n, limit)
	res, err := b.batch(ctx, natsURL, workers, env, jobURL, n, batchRate, callback)
	if err != nil {
		return row{}, err
	}
	arr, _ := tg.snapshot()
	if len(arr) < 2 {
		return row{}, errors.New("the target saw nothing")
	}
	span := arr[len(arr)-1].Sub(arr[0])
	got := float64(len(arr)-1) / span.Seconds()
	lo, hi := windows(arr, time.Second)
	printArrivals(arr)
	byWorker := res.perWorker()
	rule := fmt.Sprintf("`JETPOST_RATE_LIMITS=HOST=%d/s:%d`", limit, burst)
	outcome := fmt.Sprintf("%d ok, %d failed, attempts max %d", res.ok, res.failed, res.maxAttempts)
	switch kind {
	case rateBatch:
		rule = fmt.Sprintf("`enqueue --rate %d/s` (job field `rate`)", limit)
	case rateCallback:
		rule = fmt.Sprintf("`JETPOST_RATE_LIMITS=HOOKHOST=%d/s:%d`", limit, burst)
		outcome += fmt.Sprintf("; callbacks %d ok, %d failed, POSTs max %d", res.cbOK, res.cbFailed, res.cbMaxAttempts)
	}
	return row{text: fmt.Sprintf("| %s | %s | %d | %d | %.1f/s (%+.1f%%) | %d–%d | %s | %s |",
		name, rule, n, len(arr), got, 100*(got-limit)/limit, lo, hi, byWorker, outcome)}, nil
}

type batchResult struct {
	ok, failed, maxAttempts int
	// Of the jobs' callbacks, when they had one.
	cbOK, cbFailed, cbMaxAttempts int
	byWorker                      map[string]int
	wall                          time.Duration
}

func (r *batchResult) countCallback(cb *job.CallbackResult) {
	switch {
	case cb == nil:
		return
	case cb.OK:
		r.cbOK++
	default:
		r.cbFailed++
	}
	r.cbMaxAttempts = max(r.cbMaxAttempts, cb.Attempts)
}

func (r batchResult) perWorker() string {
	var ks []string
	for k := range r.byWorker {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprint(r.byWorker[k]))
	}
	return strings.Join(parts, " / ")
}

// batch starts workers, publishes n jobs for turl as enqueue does (rate:
// as enqueue --rate sets it; callback, if not empty, the jobs' callback
// URL), and reads back every result.
func (b *bench) batch(ctx context.Context, natsURL string, workers int, env []string, turl string, n int, rate float64, callback string) (batchResult, error) {
	stop, err := b.startWorkers(ctx, natsURL, workers, env)
	if err != nil {
		return batchResult{}, err
	}
	defer stop()
	js, closeJS, err := connect(ctx, natsURL)
	if err != nil {
		return batchResult{}, err
	}
	defer closeJS()
	return publishAndWait(ctx, js, "bench", turl, n, rate, callback)
}

// startWorkers starts worker processes; stop ends them.
func (b *bench) startWorkers(ctx context.Context, natsURL string, workers int, env []string) (stop func(), err error) {
	base := append(benchkit.CleanEnv(), "JETPOST_NATS_URL="+natsURL, "JETPOST_ALLOWED_NETWORKS=127.0.0.0/8",
		"JETPOST_LOG_FORMAT=json", "JETPOST_LOG_LEVEL=warn")
	var procs []*exec.Cmd
	var stops []func()
	stop = func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
		for _, s := range stops {
			s()
		}
	}
	debug := os.Getenv("LIMITBENCH_DEBUG") != ""
	for i := range workers {
		cmd := exec.CommandContext(ctx, b.worker)
		cmd.Env = append(append(append([]string(nil), base...), env...), fmt.Sprintf("JETPOST_WORKER_ID=w%d", i+1))
		if debug && i == 0 {
			addr, err := benchkit.FreeAddr()
			if err != nil {
				stop()
				return nil, err
			}
			cmd.Env = append(cmd.Env, "JETPOST_HTTP_ADDR="+addr)
			stops = append(stops, watchMetrics(addr))
		}
		cmd.Stderr = os.Stderr
		if dir := os.Getenv("LIMITBENCH_WORKER_LOGS"); dir != "" {
			// Every deferral with its delay, per worker: where a run's tail
			// was parked, and by whom.
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("w%d.log", i+1)))
			if err != nil {
				stop()
				return nil, err
			}
			stops = append(stops, func() { f.Close() })
			cmd.Env = append(cmd.Env, "JETPOST_LOG_LEVEL=debug")
			cmd.Stderr = f
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			stop()
			return nil, err
		}
		procs = append(procs, cmd)
	}
	return stop, nil
}

// connect opens JetStream and sets up the streams as enqueue does.
func connect(ctx context.Context, natsURL string) (jetstream.JetStream, func(), error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	// The shape enqueue gives the streams by default.
	if err := queue.Setup(ctx, js, names, queue.StreamConfig{Replicas: 1, DedupWindow: 30 * time.Minute, ResultsMaxAge: 168 * time.Hour}); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return js, nc.Close, nil
}

// publishAndWait publishes n jobs of batch for turl and reads back every
// result.
func publishAndWait(ctx context.Context, js jetstream.JetStream, batch, turl string, n int, rate float64, callback string) (batchResult, error) {
	var res batchResult
	start := time.Now()
	pub := queue.NewPublisher(js, names, 4096, nil)
	for i := range n {
		j := &job.Job{ID: fmt.Sprintf("%s-%06d", batch, i), Batch: batch, Method: "GET",
			URL: fmt.Sprintf("%s/items/%d", turl, i), EnqueuedAt: start.UTC(), Rate: rate, Callback: callback}
		if err := pub.Publish(ctx, j); err != nil {
			return res, err
		}
	}
	if st := pub.Close(); st.Published != n {
		return res, fmt.Errorf("published %d of %d jobs", st.Published, n)
	}
	cons, err := js.OrderedConsumer(ctx, names.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{names.ResultSubject(batch)},
	})
	if err != nil {
		return res, err
	}
	seen := map[string]bool{}
	res.byWorker = map[string]int{}
	for len(seen) < n {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Minute)) // longer than MaxDefer: a stuck run only
		if err != nil {
			return res, fmt.Errorf("reading results (%d of %d): %w", len(seen), n, err)
		}
		r, err := job.DecodeResult(msg.Data())
		if err != nil {
			return res, err
		}
		if seen[r.ID] {
			return res, fmt.Errorf("second result for job %s", r.ID)
		}
		seen[r.ID] = true
		if r.OK {
			res.ok++
		} else {
			res.failed++
		}
		res.maxAttempts = max(res.maxAttempts, r.Attempts)
		res.byWorker[r.Worker]++
		res.countCallback(r.Callback)
	}
	res.wall = time.Since(start)
	return res, nil
}

// windows counts arrivals in consecutive windows of d from the first one,
// leaving out the last, partial window, and returns the least and most.
func windows(arr []time.Time, d time.Duration) (lo, hi int) {
	counts := map[int]int{}
	last := int(arr[len(arr)-1].Sub(arr[0]) / d)
	for _, a := range arr {
		counts[int(a.Sub(arr[0])/d)]++
	}
	lo = -1
	for i := 0; i < last; i++ {
		c := counts[i]
		hi = max(hi, c)
		if lo < 0 || c < lo {
			lo = c
		}
	}
	return max(lo, 0), hi
}

// row is one line of a table: a rate scenario or a capacity one.
type row struct {
	capacity bool
	text     string
	// Capacity scenarios: what repeatCapacity sorts and summarises.
	name               string
	jobsPerSec, pct429 float64
	runs               string
	sum                *summary // for -json
}

func (b *bench) table(rows []row) string {
	var sb strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&sb, "Measured %s on %s (%d CPUs, %s/%s; load averages over 1, 5, 15 min %s before, %s after) with `go run ./bench/cmd/limitbench%s%s`: real worker processes, an embedded NATS server, in-process targets that time every request they receive; jobs are published and results read back as `enqueue --wait` does.\n\n",
		time.Now().UTC().Format("2006-01-02"), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, b.loadBefore, benchkit.LoadAvg(), map[bool]string{true: " -quick"}[b.quick], b.repeatFlag)
	var rate, capacity, runs []string
	for _, r := range rows {
		if r.runs != "" {
			runs = append(runs, r.runs)
		}
		if r.capacity {
			capacity = append(capacity, r.text)
		} else {
			rate = append(rate, r.text)
		}
	}
	if len(rate) > 0 {
		sb.WriteString("Fleet-wide rate limit: the target records when each request arrives; the rate is (requests − 1) ÷ (last − first arrival). Workers: `JETPOST_MAX_INFLIGHT=64` each.\n\n")
		sb.WriteString("| scenario | limit | jobs | requests at target | rate seen by the target (vs limit) | requests per whole second, least–most | results per worker | results |\n|---|---|---|---|---|---|---|---|\n")
		for _, r := range rate {
			sb.WriteString(r + "\n")
		}
		sb.WriteString("\n")
	}
	if len(capacity) > 0 {
		sb.WriteString("Adaptive concurrency against a target that answers 429 at once above 30 concurrent requests and takes 50 ms otherwise (capacity 30 ÷ 0.05 s = 600 jobs/s; the goal is ≥ 0.9 × 600 = 540 jobs/s with ≤ 2% of requests answered 429). Each worker `JETPOST_MAX_INFLIGHT=200` (several share the target), default retry policy; the target's 429s carry no `Retry-After`, `Retry-After: 1`, or an HTTP date 0.5–1.5 s ahead (whole seconds). Jobs/s = jobs ok ÷ (last 200 − first request at the target).\n\n")
		sb.WriteString("| scenario | jobs | throughput | requests, 429s | peak concurrency at target | results | wall time, publish to last result |\n|---|---|---|---|---|---|---|\n")
		for _, r := range capacity {
			sb.WriteString(r + "\n")
		}
		sb.WriteString("\n")
		for _, r := range runs {
			sb.WriteString("- " + r + "\n")
		}
		if len(runs) > 0 {
			sb.WriteString("\n")
		}
	}
	sb.WriteString(notes)
	return sb.String()
}

// notes explain the figures; they are part of the generated section.
const notes = `Reading the figures:

- The rate rows count what the target received, per whole second and over
  the batch; every job kept its single attempt (a deferral spends none).
  Three workers share one limit through the NATS bucket, and each got about
  a third of the jobs.
- The adaptive worker's limit saws between about 27 and 31: each cycle
  ends with one request refused, a few dozen more are refused in the first
  round trip, before the first 429 comes back. A job answered 429 is
  retried at the host's pace (its place in the line of parked jobs), not
  after a blind backoff, so the last result comes with the others.
- The oracle (a pool sized to the capacity the worker cannot know) is the
  most this machine's pipeline gets from the target; the adaptive worker
  gets about 97 % of it. The rest is the sawtooth, and JetStream handing
  parked jobs back in bursts: every delayed NAK pushes the consumer's
  redelivery timer 10 ms out, and with more than 1,024 jobs pending the
  server postpones redeliveries by 100 ms while acks stream in. The worker
  bridges those pauses with jobs waiting for the host's capacity (as many
  as JETPOST_MAX_INFLIGHT, at most 256; six per slot of the host, eight
  latencies each), which hold no request place. With half as many, or
  with waiting jobs holding request places, it ran at 517–556 jobs/s. A
  pull left open
  for a second (the queue's default) cost another 6–10 %, so the worker
  pulls with a 200 ms wait.
- The fixed pool of 200 fails a third to a half of its jobs outright: they
  spend all 5 attempts on 429s.
- With Retry-After the limit learns as without; only the retried jobs wait
  what the target asked (1 s), which can delay the batch's last result.
  Three workers share the target's capacity, and pace their lines of
  parked jobs on the fleet's average limit (see "A 429 teaches the limit,
  with or without Retry-After").

`

const (
	beginMarker = "<!-- limitbench:begin (go run ./bench/cmd/limitbench -write) -->"
	endMarker   = "<!-- limitbench:end -->"
)

// writeSection replaces the text between the markers, or appends a section
// (heading, then the markers) when the file (or the markers) do not exist
// yet.
func writeSection(path, table, beginMarker, endMarker, heading string) error {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s := string(data)
	block := beginMarker + "\n" + table + endMarker
	i, j := strings.Index(s, beginMarker), strings.Index(s, endMarker)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(endMarker):]
	default:
		if s == "" {
			s = "# Benchmarks\n"
		}
		s = strings.TrimRight(s, "\n") + "\n\n" + heading + "\n\n" + block + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// recorder is the target: it notes each request's arrival and answer, and
// with capacity > 0 answers 429 at once above capacity concurrent requests.
type recorder struct {
	capacity   int64
	latency    time.Duration
	retryAfter string // what a 429 carries: retryAfterNone, retryAfterSeconds, retryAfterDate

	inflight atomic.Int64
	peak     atomic.Int64
	mu       sync.Mutex
	arrivals []time.Time
	okAt     time.Time
	status   map[int]int
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	n := rc.inflight.Add(1)
	for p := rc.peak.Load(); n > p && !rc.peak.CompareAndSwap(p, n); p = rc.peak.Load() {
	}
	status := http.StatusOK
	if rc.capacity > 0 && n > rc.capacity {
		status = http.StatusTooManyRequests
		setRetryAfter(w.Header(), rc.retryAfter, now)
	} else if rc.latency > 0 {
		t := time.NewTimer(rc.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	rc.inflight.Add(-1)
	rc.mu.Lock()
	rc.arrivals = append(rc.arrivals, now)
	if rc.status == nil {
		rc.status = map[int]int{}
	}
	rc.status[status]++
	if status == http.StatusOK {
		rc.okAt = time.Now()
	}
	rc.mu.Unlock()
	w.WriteHeader(status)
}

func (rc *recorder) snapshot() ([]time.Time, map[int]int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	a := append([]time.Time(nil), rc.arrivals...)
	sort.Slice(a, func(i, j int) bool { return a[i].Before(a[j]) })
	s := map[int]int{}
	for k, v := range rc.status {
		s[k] = v
	}
	return a, s
}

func (rc *recorder) lastOK() time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.okAt
}

// stage starts a scenario's target (h) and a fresh broker; stop ends both.
func (b *bench) stage(h http.Handler) (targetURL, natsURL string, stop func(), err error) {
	srv, targetURL, err := serve(h)
	if err != nil {
		return "", "", nil, err
	}
	br, err := benchkit.StartBroker(b.tmp, 0)
	if err != nil {
		srv.Close()
		return "", "", nil, err
	}
	return targetURL, br.URL, func() { br.Stop(); srv.Close() }, nil
}

func serve(h http.Handler) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, "http://" + ln.Addr().String(), nil
}

// watchMetrics prints the worker's per-host gauges every 250 ms to standard
// error (LIMITBENCH_DEBUG): where a run lost time, and why.
func watchMetrics(addr string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		wanted := []string{"jetpost_host_concurrency_limit", "jetpost_host_in_flight", "jetpost_host_waiting", "jetpost_jobs_in_flight", "jetpost_host_refused_total", "jetpost_jobs_deferred_total"}
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var parts []string
			for _, line := range strings.Split(string(body), "\n") {
				for _, w := range wanted {
					if strings.HasPrefix(line, w) {
						name, val, _ := strings.Cut(line, " ")
						if i := strings.Index(name, "{"); i > 0 && !strings.Contains(name, "reason") {
							name = name[:i]
						}
						parts = append(parts, strings.TrimPrefix(name, "jetpost_")+"="+val)
					}
				}
			}
			fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("05.000"), strings.Join(parts, " "))
		}
	}()
	return func() { close(done); <-finished }
}
