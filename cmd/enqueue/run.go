package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"runtime/pprof"

	"github.com/nats-io/nats.go"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/logging"
	"github.com/jetpost/jetpost/internal/natsconn"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/pkg/hostlimit"
	"github.com/jetpost/jetpost/pkg/job"
)

const usage = `Usage: enqueue [flags] FILE... | -
       enqueue show RESULTS.jsonl     print results written by --out as a table
       enqueue results BATCH [--out FILE|-]   write a batch's stored results as JSON Lines, the latest per job
       enqueue status [BATCH]         jobs open, results, dead letters, lag, open breakers, limits per host
       enqueue dlq [BATCH]            list dead letters (secret headers redacted)
       enqueue redrive BATCH          re-publish a batch's dead letters: failed jobs as fresh
                                      jobs, failed callbacks as callbacks only

Validates files of HTTP request descriptions (JSON Lines or a JSON array,
gzip-compressed or not; "-" reads standard input) and publishes them as jobs
of one batch. Nothing is published if any line is invalid, unless
--skip-invalid is given. A job completed by an earlier run (same id) is not
sent again; --wait returns its stored result; --force (or enqueue redrive
BATCH, for failed ones) sends it again. A job whose earlier run failed before
sending anything (refused, breaker open, expired, cancelled) is sent again.

Flags:
`

type options struct {
	batch       string
	natsURL     string
	wait        bool
	out         string
	quiet       bool
	skipInvalid bool
	jsonSummary bool
	cpuProfile  string
	force       bool
	window      int
	rate        float64 // the batch's own fleet-wide limit per host, carried by each job
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	// Subcommands come first; a file with such a name is given as ./NAME.
	if len(args) > 0 {
		switch args[0] {
		case "show":
			return runShow(args[1:], stdin, stdout)
		case "results":
			return runResults(ctx, args[1:], stdout, stderr)
		case "dlq":
			return runDLQ(ctx, args[1:], stdout, stderr)
		case "redrive":
			return runRedrive(ctx, args[1:], stdout, stderr)
		case "status":
			return runStatus(ctx, args[1:], stdout, stderr)
		}
	}
	return runEnqueue(ctx, args, stdin, stdout, stderr)
}

// parseFlags reads the command line of an enqueue run; a nil options and
// nil error mean -h was answered.
func parseFlags(args []string, stderr io.Writer) (*options, []string, error) {
	var o options
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.batch, "batch", "", "batch id ([A-Za-z0-9_-], at most 64); default: generated and printed")
	fs.StringVar(&o.natsURL, "nats", "", natsconn.URLFlagHelp)
	fs.BoolVar(&o.wait, "wait", false, "wait until every job of the batch has its result")
	fs.StringVar(&o.out, "out", "", "with --wait: write the results as JSON Lines to this file (- for standard output)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&o.skipInvalid, "skip-invalid", false, "publish the valid lines and report the invalid ones")
	fs.BoolVar(&o.jsonSummary, "json", false, "with --wait: print the summary as one JSON object")
	fs.Func("rate", "limit this batch to N requests per second to each host, across all workers (N/s, N/m, N/h or N/d; at least 1/d)", func(v string) (err error) { o.rate, err = hostlimit.ParseBatchRate(v); return err })
	fs.BoolVar(&o.force, "force", false, "send every job again, even those completed by an earlier run or enqueued within the dedup window")
	fs.IntVar(&o.window, "window", enqueue.DefaultWindow, "publishes awaiting the broker's ack at once")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of the run to this file")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, nil
		}
		return nil, nil, &exitError{code: exitUsage}
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return nil, nil, &exitError{exitUsage, errors.New("no input: give one or more files, or - for standard input")}
	}
	if o.out != "" && !o.wait {
		return nil, nil, &exitError{exitUsage, errors.New("--out needs --wait")}
	}
	if o.window < 1 {
		return nil, nil, &exitError{exitUsage, errors.New("--window must be at least 1")}
	}
	if o.batch == "" {
		o.batch = enqueue.NewBatchID()
	} else if !job.ValidBatch(o.batch) {
		return nil, nil, &exitError{exitUsage, fmt.Errorf("--batch %q: use 1 to 64 characters of [A-Za-z0-9_-]", o.batch)}
	}
	return &o, fs.Args(), nil
}

func runEnqueue(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o, files, err := parseFlags(args, stderr)
	if o == nil {
		return err
	}
	cfg, err := config.LoadCommon()
	if err != nil {
		return &exitError{exitUsage, err}
	}
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return &exitError{exitUsage, err}
		}
		defer stop()
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return &exitError{exitUsage, err}
	}
	ins, err := enqueue.OpenInputs(files, stdin)
	if err != nil {
		return &exitError{exitUsage, err}
	}
	policy, err := cfg.Policy()
	if err != nil {
		return &exitError{exitUsage, err}
	}
	for _, in := range ins {
		in.Policy = policy
	}
	// The decoder keeps every id of a file (tens of bytes each, to catch
	// duplicates) and both passes make short-lived garbage fast: a tighter
	// GC target keeps a million-line run's peak under 100 MB, for a few
	// percent more CPU. GOGC, if set, wins.
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(50))
	}
	natsURL := natsconn.URL(o.natsURL, cfg)
	sum, err := enqueue.Run(ctx, enqueue.Options{
		Inputs: ins, Batch: o.batch, Rate: o.rate, SkipInvalid: o.skipInvalid, Force: o.force, Window: o.window,
		Wait: o.wait, OutPath: o.out, Progress: progressMode(o.quiet, stderr),
		Names:   queue.Names{Prefix: cfg.SubjectPrefix, SecretHeaders: cfg.SecretHeaders(), IdentityKey: []byte(cfg.IdentityKey)},
		Streams: queue.StreamConfig{Replicas: cfg.Replicas, DedupWindow: cfg.DedupWindow, ResultsMaxAge: cfg.ResultsMaxAge},
		Connect: func() (*nats.Conn, error) {
			nc, err := natsconn.Connect(natsURL, cfg, "jetpost-enqueue", false, log)
			if err != nil {
				return nil, fmt.Errorf("%w (is a worker or nats-server running? set --nats or JETPOST_NATS_URL)", err)
			}
			return nc, nil
		},
		Stdout: stdout, Stderr: stderr, Log: log,
	})
	var inputErr *enqueue.InputError
	switch {
	case errors.As(err, &inputErr):
		return &exitError{exitUsage, inputErr.Err}
	case err != nil:
		return &exitError{exitBroker, err}
	case sum == nil:
		return nil
	}
	printSummary(o, sum, stdout, stderr)
	if sum.Failed > 0 || sum.Missing > 0 {
		return &exitError{code: exitFailedJobs}
	}
	return nil
}

func progressMode(quiet bool, stderr io.Writer) enqueue.ProgressMode {
	switch {
	case quiet:
		return enqueue.ProgressQuiet
	case logging.IsTerminal(stderr):
		return enqueue.ProgressBar
	default:
		return enqueue.ProgressLines
	}
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// printSummary prints what came back: one JSON object on stdout, or lines
// for people on stderr.
func printSummary(o *options, sum *enqueue.Summary, stdout, stderr io.Writer) {
	if o.jsonSummary {
		b, _ := json.Marshal(sum)
		fmt.Fprintln(stdout, string(termsafe.JSON(b)))
		return
	}
	fmt.Fprintln(stderr, "batch "+o.batch+": "+sum.String())
	if b := sum.BreakerLine(); b != "" {
		fmt.Fprintln(stderr, "batch "+o.batch+": "+b)
	}
}
