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
	"slices"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/logging"
	"github.com/jetpost/jetpost/internal/natsconn"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/internal/tracing"
	"github.com/jetpost/jetpost/internal/version"
	"github.com/jetpost/jetpost/pkg/hostlimit"
	"github.com/jetpost/jetpost/pkg/job"
)

const usage = `Usage: enqueue [flags] FILE... | -
       enqueue show RESULTS.jsonl     print results written by --out as a table
       enqueue results BATCH [--out FILE|-]   write a batch's stored results as JSON Lines, the latest per job
       enqueue status [BATCH] [--json]   jobs open, results, dead letters, lag, open breakers, limits per host
       enqueue dlq [BATCH] [--json]   list dead letters (secret headers redacted)
       enqueue redrive BATCH          re-publish a batch's dead letters: failed jobs as fresh
                                      jobs, failed callbacks as callbacks only
       enqueue pause BATCH [--json]   stop sending the batch's jobs, fleet-wide (requests in flight finish)
       enqueue resume BATCH [--json]  send them again (a cancelled batch's open jobs too)
       enqueue cancel BATCH [--wait] [--timeout D] [--json]
                                      end every open job with a cancelled result; nothing of
                                      the batch is sent once it returns
       enqueue --version

Flags go before or after the subcommand and the files (-- ends them).
Validates files of HTTP request descriptions (JSON Lines or a JSON array,
gzip-compressed or not; "-" reads standard input) and publishes them as jobs
of one batch. Nothing is published if any line is invalid, unless
--skip-invalid is given. A job completed by an earlier run (same id) is not
sent again; --wait returns its stored result; --force (or enqueue redrive
BATCH, for failed ones) sends it again. A job whose earlier run failed before
sending anything (refused, breaker open, expired, cancelled) is sent again.

Standard output carries the batch id (once published), or with --wait --json
one JSON document (the batch id in it), or with --out - the results alone
(JSON Lines, each naming its batch); all else goes to standard error.

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
	priority    int     // the batch's weight; 0: kept (normal for a new batch)
	version     bool
}

// subcommand is the subcommand called name, nil if none is; a file with
// such a name is given as ./NAME.
func subcommand(name string) func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	switch name {
	case "show":
		return func(_ context.Context, args []string, stdin io.Reader, stdout, _ io.Writer) error {
			return runShow(args, stdin, stdout)
		}
	case "results":
		return func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
			return runResults(ctx, args, stdout, stderr)
		}
	case "dlq":
		return func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
			return runDLQ(ctx, args, stdout, stderr)
		}
	case "redrive":
		return func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
			return runRedrive(ctx, args, stdout, stderr)
		}
	case "status":
		return func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
			return runStatus(ctx, args, stdout, stderr)
		}
	case "pause", "resume", "cancel":
		return func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
			return runControl(ctx, name, args, stdout, stderr)
		}
	}
	return nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if name, rest := findSubcommand(args); name != "" {
		return subcommand(name)(ctx, rest, stdin, stdout, stderr)
	}
	return runEnqueue(ctx, args, stdin, stdout, stderr)
}

// findSubcommand finds the first argument that is not a flag or a flag's
// value; if it names a subcommand, it returns the name and the other
// arguments (flags before it included: `enqueue --nats URL status`).
func findSubcommand(args []string) (string, []string) {
	fs := newFlagSet(&options{}, io.Discard)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return "", nil
		}
		if len(a) < 2 || a[0] != '-' {
			if subcommand(a) == nil {
				return "", nil
			}
			return a, append(slices.Clip(args[:i]), args[i+1:]...)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if f := fs.Lookup(name); f != nil && !hasValue && !isBoolFlag(f) {
			i++ // its value
		}
	}
	return "", nil
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.batch, "batch", "", "batch id ([A-Za-z0-9_-], at most 64); default: generated and printed")
	fs.StringVar(&o.natsURL, "nats", "", natsconn.URLFlagHelp)
	fs.BoolVar(&o.wait, "wait", false, "wait until every job of the batch has its result")
	fs.StringVar(&o.out, "out", "", "with --wait: write the results as JSON Lines to this file (- for standard output)")
	fs.BoolVar(&o.quiet, "quiet", false, "print nothing but errors: no progress, no summary unless jobs failed (standard output keeps the batch id or what --json and --out write)")
	fs.BoolVar(&o.skipInvalid, "skip-invalid", false, "publish the valid lines and report the invalid ones")
	fs.BoolVar(&o.jsonSummary, "json", false, "with --wait: print one JSON document on standard output (the batch id and the summary) and nothing else there")
	fs.Func("rate", "limit this batch to N requests per second to each host, across all workers (N/s, N/m, N/h or N/d; at least 1/d)", func(v string) (err error) { o.rate, err = hostlimit.ParseBatchRate(v); return err })
	fs.Func("priority", "the batch's share of the workers against other batches: high (16), normal (4, the default), low (1) or a weight from 1 to 100; a batch enqueued again keeps its priority unless given", func(v string) (err error) { o.priority, err = queue.ParsePriority(v); return err })
	fs.BoolVar(&o.force, "force", false, "send every job again, even those completed by an earlier run or enqueued within the dedup window")
	fs.IntVar(&o.window, "window", enqueue.DefaultWindow, "publishes awaiting the broker's ack at once")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of the run to this file")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags reads the command line of an enqueue run; a nil options and
// nil error mean -h or --version was answered.
func parseFlags(args []string, stdout, stderr io.Writer) (*options, []string, error) {
	var o options
	fs := newFlagSet(&o, stderr)
	files, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if o.version {
		fmt.Fprintln(stdout, version.Of("enqueue", buildVersion))
		return nil, nil, nil
	}
	if len(files) == 0 {
		fs.Usage()
		return nil, nil, &exitError{exitUsage, errors.New("no input: give one or more files, or - for standard input")}
	}
	if err := checkOptions(&o); err != nil {
		return nil, nil, &exitError{exitUsage, err}
	}
	if o.batch == "" {
		o.batch = enqueue.NewBatchID()
	}
	return &o, files, nil
}

// checkOptions refuses flags that cannot go together.
func checkOptions(o *options) error {
	switch {
	case o.out != "" && !o.wait:
		return errors.New("--out needs --wait (without it there are no results to write)")
	case o.jsonSummary && !o.wait:
		return errors.New("--json needs --wait (without it there is no summary; the batch id alone is on standard output)")
	case o.jsonSummary && o.out == "-":
		return errors.New("--json and --out - both write standard output: give --out a file")
	case o.window < 1:
		return errors.New("--window must be at least 1")
	case o.batch != "" && !job.ValidBatch(o.batch):
		return fmt.Errorf("--batch %q: use 1 to 64 characters of [A-Za-z0-9_-]", o.batch)
	}
	return nil
}

func runEnqueue(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o, files, err := parseFlags(args, stdout, stderr)
	if o == nil {
		return err
	}
	cfg, err := loadConfig(stderr)
	if err != nil {
		return err
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
	tracer, stopTracing, err := tracing.Start(ctx, "jetpost-enqueue", buildVersion, stderr, func(err error) {
		log.Warn().Err(err).Msg("exporting traces failed")
	})
	if err != nil {
		return &exitError{exitUsage, err}
	}
	defer stopTracing()
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
	// With --json, standard output holds the one document: the batch id
	// goes inside it, not on a line of its own.
	runStdout := stdout
	if o.jsonSummary {
		runStdout = io.Discard
	}
	sum, err := enqueue.Run(ctx, enqueue.Options{
		Inputs: ins, Batch: o.batch, Rate: o.rate, Priority: o.priority, SkipInvalid: o.skipInvalid, Force: o.force, Window: o.window,
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
		Stdout: runStdout, Stderr: stderr, Log: log, Tracer: tracer,
	})
	var inputErr *enqueue.InputError
	var cancelled *enqueue.CancelledError
	switch {
	case errors.As(err, &inputErr):
		return &exitError{exitUsage, inputErr.Err}
	case errors.As(err, &cancelled):
		return &exitError{exitCancelled, err}
	case err != nil:
		return &exitError{exitBroker, err}
	case sum == nil:
		return nil
	}
	printSummary(o, sum, stdout, stderr)
	if !allOK(sum) {
		return &exitError{code: exitFailedJobs}
	}
	return nil
}

// allOK: every job has an ok result (exit status 0).
func allOK(sum *enqueue.Summary) bool {
	return sum.Failed == 0 && sum.Missing == 0 && sum.Cancelled == 0
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

// printSummary prints what came back: one JSON document on stdout, or
// lines for people on stderr (with --quiet, only when jobs failed: then
// they are the error).
func printSummary(o *options, sum *enqueue.Summary, stdout, stderr io.Writer) {
	if o.jsonSummary {
		b, _ := json.Marshal(struct {
			Batch string `json:"batch"`
			*enqueue.Summary
		}{o.batch, sum})
		fmt.Fprintln(stdout, string(termsafe.JSON(b)))
		return
	}
	if o.quiet && allOK(sum) {
		return
	}
	fmt.Fprintln(stderr, "batch "+o.batch+": "+sum.String())
	if b := sum.BreakerLine(); b != "" {
		fmt.Fprintln(stderr, "batch "+o.batch+": "+b)
	}
}

// loadConfig reads the shared configuration and warns about JETPOST_*
// variables no command reads.
func loadConfig(stderr io.Writer) (*config.Common, error) {
	cfg, err := config.LoadCommon()
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	config.WarnUnknown(func(msg string) { fmt.Fprintln(stderr, "enqueue: warning:", msg) })
	return cfg, nil
}
