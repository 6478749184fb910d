package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/logging"
	"github.com/jetpost/jetpost/internal/natsconn"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/queue"
)

const usage = `Usage: enqueue [flags] FILE... | -
       enqueue show RESULTS.jsonl     print results written by --out as a table
       enqueue status [BATCH]         jobs open, results, dead letters, lag, open breakers
       enqueue dlq [BATCH]            list dead letters (secret headers redacted)
       enqueue redrive BATCH          re-publish a batch's dead letters as fresh jobs

Validates files of HTTP request descriptions (JSON Lines or a JSON array;
"-" reads standard input) and publishes them as jobs of one batch. Nothing is
published if any line is invalid, unless --skip-invalid is given.

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
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	// Subcommands come first; a file with such a name is given as ./NAME.
	if len(args) > 0 {
		switch args[0] {
		case "show":
			return runShow(args[1:], stdin, stdout)
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

func runEnqueue(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.batch, "batch", "", "batch id ([A-Za-z0-9_-], at most 64); default: generated and printed")
	fs.StringVar(&o.natsURL, "nats", "", "NATS URL (default $JETPOST_NATS_URL or "+natsconn.DefaultURL+")")
	fs.BoolVar(&o.wait, "wait", false, "wait until every job of the batch has its result")
	fs.StringVar(&o.out, "out", "", "with --wait: write the results as JSON Lines to this file (- for standard output)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&o.skipInvalid, "skip-invalid", false, "publish the valid lines and report the invalid ones")
	fs.BoolVar(&o.jsonSummary, "json", false, "with --wait: print the summary as one JSON object")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: exitUsage}
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return &exitError{exitUsage, errors.New("no input: give one or more files, or - for standard input")}
	}
	if o.out != "" && !o.wait {
		return &exitError{exitUsage, errors.New("--out needs --wait")}
	}
	if o.batch == "" {
		o.batch = newBatchID()
	} else if !job.ValidBatch(o.batch) {
		return &exitError{exitUsage, fmt.Errorf("--batch %q: use 1 to 64 characters of [A-Za-z0-9_-]", o.batch)}
	}
	cfg, err := config.LoadCommon()
	if err != nil {
		return &exitError{exitUsage, err}
	}
	if o.natsURL == "" {
		o.natsURL = cfg.NatsURL
	}
	if o.natsURL == "" {
		o.natsURL = natsconn.DefaultURL
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return &exitError{exitUsage, err}
	}

	ins, err := enqueue.OpenInputs(fs.Args(), stdin)
	if err != nil {
		return &exitError{exitUsage, err}
	}
	defer enqueue.CloseInputs(ins)

	// Pass 1: validate everything before publishing anything.
	v, err := enqueue.Validate(ins)
	if err != nil {
		return &exitError{exitUsage, err}
	}
	for _, le := range v.Errors {
		fmt.Fprintln(stderr, le)
	}
	if v.Invalid > len(v.Errors) {
		fmt.Fprintf(stderr, "... and %d more invalid lines\n", v.Invalid-len(v.Errors))
	}
	if v.Invalid > 0 && !o.skipInvalid {
		return &exitError{exitUsage, fmt.Errorf("%d invalid lines; nothing was published (fix them, or use --skip-invalid)", v.Invalid)}
	}
	if v.Valid == 0 {
		return &exitError{exitUsage, errors.New("no valid jobs in the input")}
	}

	nc, err := natsconn.Connect(o.natsURL, cfg, "jetpost-enqueue", false, log)
	if err != nil {
		return &exitError{exitBroker, fmt.Errorf("%w (is a worker or nats-server running? set --nats or JETPOST_NATS_URL)", err)}
	}
	defer nc.Close()
	const window = 4096
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(window))
	if err != nil {
		return &exitError{exitBroker, err}
	}
	names := queue.NewNames(cfg.SubjectPrefix)
	if err := queue.Setup(ctx, js, names, queue.StreamConfig{
		Replicas: cfg.Replicas, DedupWindow: cfg.DedupWindow, ResultsMaxAge: cfg.ResultsMaxAge,
	}); err != nil {
		return &exitError{exitBroker, err}
	}
	fmt.Fprintf(stderr, "batch %s: publishing %d jobs\n", o.batch, v.Valid)

	start := time.Now()
	var col *enqueue.Collector
	var outFile io.WriteCloser
	if o.wait {
		col = enqueue.NewCollector()
		switch o.out {
		case "":
		case "-":
			col.Out = stdout
		default:
			f, err := os.Create(o.out)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			outFile = f
			col.Out = f
		}
	}
	prog := newProgress(stderr, o.quiet, v.Valid)
	if col != nil {
		col.OnResult = prog.result
	}

	// Results are read from the start of the batch's subject, so the
	// collector may start now and catch results of jobs just published.
	waitErr := make(chan error, 1)
	wctx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	if col != nil {
		go func() { waitErr <- col.Run(wctx, js, names, o.batch) }()
	}

	explicitBatch := fs.Lookup("batch").Value.String() != "" && o.batch == fs.Lookup("batch").Value.String()
	pub := queue.NewPublisher(js, names, window, func(id string, dup bool, err error) {
		prog.published()
		// A duplicate was enqueued before; with the same batch its result
		// comes on this subject, with another batch it never will.
		if col != nil && err == nil && (!dup || explicitBatch) {
			col.Expect(id)
		}
	})
	now := time.Now().UTC()
	var pubErr error
	for _, in := range ins {
		pubErr = in.Each(func(j *job.Job) error {
			j.Batch = o.batch
			j.EnqueuedAt = now
			return pub.Publish(ctx, j)
		}, nil)
		if pubErr != nil {
			break
		}
	}
	st := pub.Close()
	if col != nil {
		col.Seal()
	}
	for _, pe := range st.Failed {
		fmt.Fprintln(stderr, "not published:", pe)
	}
	msg := fmt.Sprintf("batch %s: %d published", o.batch, st.Published)
	if st.Duplicates > 0 {
		msg += fmt.Sprintf(", %d already enqueued (same id within the dedup window) and skipped", st.Duplicates)
	}
	if len(st.Failed) > 0 {
		msg += fmt.Sprintf(", %d refused by the broker", len(st.Failed))
	}
	fmt.Fprintln(stderr, msg)
	if pubErr != nil || len(st.Failed) > 0 {
		prog.finish()
		if pubErr == nil {
			pubErr = fmt.Errorf("%d jobs were not published", len(st.Failed))
		}
		return &exitError{exitBroker, pubErr}
	}
	fmt.Fprintln(stdout, o.batch)
	if col == nil {
		prog.finish()
		return nil
	}

	err = <-waitErr
	prog.finish()
	if outFile != nil {
		if cerr := outFile.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return &exitError{exitBroker, fmt.Errorf("waiting for results: %w", err)}
	}
	col.Summary.Finish(time.Since(start))
	if o.jsonSummary {
		b, _ := json.Marshal(&col.Summary)
		fmt.Fprintln(stdout, string(b))
	} else {
		fmt.Fprintln(stderr, "batch "+o.batch+": "+col.Summary.String())
	}
	if col.Summary.Failed > 0 {
		return &exitError{code: exitFailedJobs}
	}
	return nil
}

func newBatchID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// progress shows how the batch goes: a bar on a terminal, a status line
// every few seconds otherwise, nothing with --quiet.
type progress struct {
	bar             *progressbar.ProgressBar
	w               io.Writer
	total           int
	pub, ok, failed atomic.Int64
	lastLine        atomic.Int64
	quiet           bool
}

func newProgress(w io.Writer, quiet bool, total int) *progress {
	p := &progress{w: w, total: total, quiet: quiet}
	if !quiet && logging.IsTerminal(w) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("results"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("jobs"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
		)
	}
	p.lastLine.Store(time.Now().UnixNano())
	return p
}

func (p *progress) published() { p.pub.Add(1) }

func (p *progress) result(r *job.Result) {
	if r.OK {
		p.ok.Add(1)
	} else {
		p.failed.Add(1)
	}
	if p.quiet {
		return
	}
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("published %d, ok %d, failed %d", p.pub.Load(), p.ok.Load(), p.failed.Load()))
		_ = p.bar.Add(1)
		return
	}
	now := time.Now().UnixNano()
	last := p.lastLine.Load()
	if time.Duration(now-last) >= 5*time.Second && p.lastLine.CompareAndSwap(last, now) {
		fmt.Fprintf(p.w, "progress: published %d/%d, ok %d, failed %d\n", p.pub.Load(), p.total, p.ok.Load(), p.failed.Load())
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
	}
}
