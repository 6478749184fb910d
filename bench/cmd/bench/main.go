// Command bench is `make bench`: jetpost end to end against side-by-side
// baselines, on this machine, in one run.
//
// It builds cmd/worker, cmd/enqueue and cmd/demotarget into a temporary
// directory, starts an embedded NATS server (JetStream, random port,
// temporary store) inside its own process, runs the demo target and the
// workers as separate processes, and times `enqueue --wait` for
// each scenario of issue 6, the isolation figures of issue 3 and the fair
// share between batches of issue 15 (fairness.go), the adaptive limit
// against 429s of issue 17 (adaptive.go: bench/cmd/limitbench as a child)
// and a large batch end to end (scale.go: 100,000 jobs beside the others,
// 1,000,000 alone, as `make bench-scale` runs it). The raw
// baseline is a plain net/http client in this process, same target, same
// concurrency, no queue. The markdown table goes to standard output and,
// between markers this program owns, into BENCHMARKS.md. It ends with
// issue 17's goals side by side with the raw client (goals.go).
//
// CPU accounting follows the processes: worker CPU is read from
// /proc/PID/stat between the worker being ready and the batch's end; enqueue
// CPU from its rusage; broker CPU is this process's own CPU time during the
// run (it serves the embedded NATS server and little else meanwhile); the
// target's from its /proc/PID/stat.
//
// Usage:
//
//	go run ./bench/cmd/bench [-quick] [-scenario latency,throughput,horizontal,memory,isolation,fairness,adaptive,scale]
//	                   [-rounds 3] [-write] [-md BENCHMARKS.md] [-worker-env K=V,...]
//	                   [-scale-jobs N] [-scale-workers N] [-limitbench BIN] [-base REV]
//	go run ./bench/cmd/bench -profile DIR [-scenario latency|throughput] [-quick]
//
// -profile runs the worker's own packages in this process instead of the
// worker binary, with a CPU profile and per-job timings of every queue
// operation (see profile.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
)

var allScenarios = []string{"latency", "throughput", "horizontal", "memory", "isolation", "fairness", "adaptive", "scale"}

type bench struct {
	root, binDir, tmp string
	quick             bool
	rounds            int
	workerEnv         []string
	hangTimeout       time.Duration
	perfDir           string
	out               io.Writer // progress
	// The scale scenario: -scale-jobs (0: by scaleSize's rule), workers,
	// and whether it runs alone (a million jobs) or beside the others.
	scaleJobs, scaleWorkers int
	scaleAlone              bool
	limitbench              string // -limitbench: a limitbench built elsewhere
	baseWorker, baseLabel   string // -base: a worker built from another commit
	heapDir                 string // -heap: the broker's heap profile after the scale run
	scaleDeadline           time.Duration

	loadBefore string
	revision   string

	rows    []row
	details []detail
	notes   []string
	goals   []goal // issue 17's, the closing table
	headline
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "scale job counts down about tenfold (a smoke run; figures are not comparable)")
	scen := fs.String("scenario", strings.Join(allScenarios, ","), "comma-separated scenarios to run: "+strings.Join(allScenarios, ", "))
	rounds := fs.Int("rounds", 3, "paired rounds (raw, then jetpost) of the throughput scenario")
	write := fs.String("write", "auto", "update BENCHMARKS.md: yes, no, or auto (only for a full run of every scenario)")
	md := fs.String("md", "BENCHMARKS.md", "file to update, relative to the module root")
	wenv := fs.String("worker-env", "", "extra worker environment, comma-separated K=V (e.g. JETPOST_PREFETCH=20,GOGC=200)")
	hang := fs.Duration("hang-timeout", 2*time.Second, "JETPOST_REQUEST_TIMEOUT of the isolation scenario's worker")
	profile := fs.String("profile", "", "run in-process with a CPU profile and per-job queue timings, writing into this directory")
	revLabel := fs.String("rev", "", "describe the measured code in the header (default: from git)")
	scaleJobs := fs.Int("scale-jobs", 0, "jobs of the scale scenario (default 1,000,000 when it runs alone, 100,000 beside other scenarios or with -quick)")
	scaleWorkers := fs.Int("scale-workers", 1, "worker processes of the scale scenario")
	limitbench := fs.String("limitbench", "", "run this limitbench binary for the adaptive scenario (say, one that knows -retry-after, against an older worker) instead of ./bench/cmd/limitbench")
	base := fs.String("base", "", "also run each throughput round with a worker built from this commit (before/after in the same rounds)")
	scaleDeadline := fs.Duration("scale-deadline", 0, "stop the scale run after this long and report what it stored by then (default 40m when scale runs alone, 8m beside other scenarios)")
	heapDir := fs.String("heap", "", "write the embedded broker's heap profile at the end of the scale run into this directory")
	perfDir := fs.String("perf", "", "record each jetpost run's worker, enqueue and broker (this process: build it with go build for symbols) with perf(1) into this directory")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	chosen, err := parseScenarios(*scen)
	if err != nil {
		return err
	}
	if *rounds < 1 {
		return errors.New("-rounds must be at least 1")
	}
	root, err := benchkit.ModuleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "jetpost-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b := &bench{
		root: root, binDir: filepath.Join(tmp, "bin"), tmp: tmp,
		quick: *quick, rounds: *rounds, hangTimeout: *hang, out: stderr, perfDir: *perfDir,
		scaleJobs: *scaleJobs, scaleWorkers: max(1, *scaleWorkers), scaleAlone: len(chosen) == 1,
		limitbench: *limitbench, heapDir: *heapDir, scaleDeadline: *scaleDeadline,
	}
	if b.scaleDeadline == 0 {
		// make bench must end within its budget; make bench-scale may take long.
		b.scaleDeadline = map[bool]time.Duration{true: 40 * time.Minute, false: 8 * time.Minute}[b.scaleAlone]
	}
	if b.workerEnv, err = parseWorkerEnv(*wenv); err != nil {
		return err
	}
	b.logf("building worker, enqueue, demotarget and limitbench")
	if err := benchkit.Build(ctx, root, b.binDir, "./cmd/worker", "./cmd/enqueue", "./cmd/demotarget", "./bench/cmd/limitbench"); err != nil {
		return err
	}
	if *profile != "" {
		return b.profile(ctx, *profile, chosen)
	}
	if *base != "" {
		b.logf("building the worker of %s", *base)
		if b.baseWorker, b.baseLabel, err = buildBase(ctx, root, tmp, *base); err != nil {
			return err
		}
	}

	b.revision = gitRevision(root)
	if *revLabel != "" {
		b.revision = *revLabel
	}
	b.loadBefore = benchkit.LoadAvg()
	start := time.Now()
	if err := b.runScenarios(ctx, chosen); err != nil {
		return err
	}
	took := time.Since(start)

	cmdline := "make bench"
	if len(args) > 0 {
		cmdline = "go run ./bench/cmd/bench " + strings.Join(args, " ")
	}
	report := b.markdown(cmdline, took)
	fmt.Fprint(stdout, report)

	full := !*quick && len(chosen) == len(allScenarios) && *rounds >= 3
	sec := benchSection
	if len(chosen) == 1 && chosen[0] == "scale" {
		// make bench-scale: a section of its own, for a million jobs.
		full, sec = b.scaleSize() >= 1_000_000, scaleSection
	}
	doWrite := *write == "yes" || (*write == "auto" && full)
	if doWrite {
		path := filepath.Join(root, *md)
		if err := updateFile(path, report, sec); err != nil {
			return err
		}
		b.logf("wrote the table into %s", path)
	} else {
		b.logf("BENCHMARKS.md left alone (partial or quick run; -write yes to force)")
	}
	return nil
}

func (b *bench) logf(format string, a ...any) {
	fmt.Fprintf(b.out, "bench: "+format+"\n", a...)
}

func parseScenarios(list string) ([]string, error) {
	var chosen []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(allScenarios, ", "))
		}
		chosen = append(chosen, s)
	}
	return chosen, nil
}

// parseWorkerEnv reads -worker-env: comma-separated NAME=VALUE.
func parseWorkerEnv(list string) ([]string, error) {
	if list == "" {
		return nil, nil
	}
	var env []string
	for _, kv := range strings.Split(list, ",") {
		if !strings.Contains(kv, "=") {
			return nil, fmt.Errorf("-worker-env %q: want NAME=VALUE", kv)
		}
		env = append(env, strings.TrimSpace(kv))
	}
	return env, nil
}

func (b *bench) runScenarios(ctx context.Context, chosen []string) error {
	for _, s := range chosen {
		var err error
		switch s {
		case "latency":
			err = b.latency(ctx)
		case "throughput":
			err = b.throughput(ctx)
		case "horizontal":
			err = b.horizontal(ctx)
		case "memory":
			err = b.memory(ctx)
		case "isolation":
			err = b.isolation(ctx)
		case "fairness":
			err = b.fairness(ctx)
		case "adaptive":
			err = b.adaptive(ctx)
		case "scale":
			err = b.scale(ctx)
		}
		if err != nil {
			return fmt.Errorf("scenario %s: %w", s, err)
		}
	}
	return nil
}

// scaled is n for a full run, about a tenth (at least min) with -quick.
func (b *bench) scaled(n, least int) int {
	if !b.quick {
		return n
	}
	return max(n/10, least)
}

func machine() string {
	return fmt.Sprintf("%d CPUs (GOMAXPROCS %d), %s %s/%s", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
