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
	"runtime/debug"
	"runtime/pprof"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/logging"
	"github.com/jetpost/jetpost/internal/natsconn"
	"github.com/jetpost/jetpost/internal/queue"
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

func runEnqueue(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
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
	var rate float64 // --rate: the batch's own fleet-wide limit per host, carried by each job
	fs.Func("rate", "limit this batch to N requests per second to each host, across all workers (N/s, N/m or N/h)", func(v string) (err error) { rate, err = hostlimit.ParseBatchRate(v); return err })
	fs.BoolVar(&o.force, "force", false, "send every job again, even those completed by an earlier run or enqueued within the dedup window")
	fs.IntVar(&o.window, "window", enqueue.DefaultWindow, "publishes awaiting the broker's ack at once")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of the run to this file")
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
	if o.window < 1 {
		return &exitError{exitUsage, errors.New("--window must be at least 1")}
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
	o.natsURL = natsconn.URL(o.natsURL, cfg)
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return &exitError{exitUsage, err}
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return &exitError{exitUsage, err}
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return &exitError{exitUsage, err}
	}

	ins, err := enqueue.OpenInputs(fs.Args(), stdin)
	if err != nil {
		return &exitError{exitUsage, err}
	}
	mode := enqueue.ProgressQuiet
	switch {
	case o.quiet:
	case logging.IsTerminal(stderr):
		mode = enqueue.ProgressBar
	default:
		mode = enqueue.ProgressLines
	}

	// Pass 1: validate everything (spooling the encoded jobs) before
	// publishing anything.
	start := time.Now()
	enqueuedAt := start.UTC()
	// The decoder keeps every id of a file (tens of bytes each, to catch
	// duplicates) and both passes make short-lived garbage fast: a tighter
	// GC target keeps a million-line run's peak under 100 MB, for a few
	// percent more CPU. GOGC, if set, wins.
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(50))
	}
	v, err := enqueue.Prepare(ins, func(j *job.Job) {
		j.Batch = o.batch
		j.EnqueuedAt = enqueuedAt
		j.Rate = rate
	})
	validated := time.Since(start)
	// What the decoder held is garbage now; hand it back before publishing
	// allocates its window.
	debug.FreeOSMemory()
	if err != nil {
		return &exitError{exitUsage, err}
	}
	defer v.Spool.Close()
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
	// Jobs the broker would refuse are input errors like any other: named
	// by file and line, and nothing is published.
	if tooLarge := v.TooLarge(nc.MaxPayload()); len(tooLarge) > 0 {
		for _, le := range tooLarge[:min(len(tooLarge), enqueue.MaxReported)] {
			fmt.Fprintln(stderr, le)
		}
		if len(tooLarge) > enqueue.MaxReported {
			fmt.Fprintf(stderr, "... and %d more jobs too large\n", len(tooLarge)-enqueue.MaxReported)
		}
		return &exitError{exitUsage, fmt.Errorf("%d jobs are too large for the NATS server; nothing was published", len(tooLarge))}
	}
	// A lost ack must end as an error that is retried, not as a publish
	// waited for forever.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(o.window), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return &exitError{exitBroker, err}
	}
	names := queue.NewNames(cfg.SubjectPrefix)
	streams := queue.StreamConfig{Replicas: cfg.Replicas, DedupWindow: cfg.DedupWindow, ResultsMaxAge: cfg.ResultsMaxAge}
	if err := queue.Setup(ctx, js, names, streams); err != nil {
		return &exitError{exitBroker, err}
	}
	var done *queue.DoneIndex
	if !o.force {
		if err := queue.SetupDone(ctx, js, names, streams); err != nil {
			fmt.Fprintf(stderr, "warning: %v: completed jobs cannot be looked up; jobs enqueued again after the dedup window (%s) will be sent again\n", err, cfg.DedupWindow)
		} else {
			done = queue.NewDoneIndex(js, names)
		}
	}
	var forceToken string
	if o.force {
		if n, err := queue.ResultBatchCount(ctx, js, names, o.batch); err != nil {
			return &exitError{exitBroker, err}
		} else if n > 0 {
			return &exitError{exitUsage, fmt.Errorf("--force: batch %s already has %d results; a forced run needs a batch of its own (leave --batch out, or choose another)", o.batch, n)}
		}
		forceToken = randomHex(6)
	}

	var col *enqueue.Collector
	var outFile io.WriteCloser
	if o.wait {
		col = enqueue.NewCollector()
		if err := v.ExpectAll(col); err != nil {
			return &exitError{exitUsage, err}
		}
		switch o.out {
		case "":
		case "-":
			col.Out = stdout
		default:
			f, err := os.Create(o.out)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			defer f.Close() // on early returns; closed and checked below
			outFile = f
			col.Out = f
		}
	}
	if col != nil && done != nil {
		// Results already stored (a batch id used again) are earlier runs':
		// what this run needs of them is found through the markers.
		if col.After, err = queue.ResultsLastSeq(ctx, js, names); err != nil {
			return &exitError{exitBroker, err}
		}
	}
	prog := enqueue.NewProgress(stderr, mode, v.Valid, o.wait)
	if col != nil {
		col.OnOutcome = prog.Outcome
	}
	var breakers *enqueue.BreakerWatch
	if col != nil {
		var stopWatch func()
		breakers, stopWatch = watchBreakers(ctx, js, names, prog.Printf)
		defer stopWatch()
		prog.ShowBreakers(breakers)
	}
	fmt.Fprintf(stderr, "batch %s: publishing %d jobs (validated in %.1fs)\n", o.batch, v.Valid, validated.Seconds())
	prog.Start()
	defer prog.Finish()

	// Results are read from the start of the batch's subject, so the
	// collector may start now and catch results of jobs just published.
	waitErr := make(chan error, 1)
	wctx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	if col != nil {
		go func() { waitErr <- col.Run(wctx, js, names, o.batch) }()
	}

	rep, pubErr := enqueue.Publish(ctx, js, v.Spool, enqueue.PublishOptions{
		Batch: o.batch, Names: names, Window: o.window, Done: done, ForceToken: forceToken,
		Collector: col, Progress: prog,
	})
	for i, pe := range rep.Failed {
		if i == enqueue.MaxReported {
			prog.Printf("... and %d more jobs not published\n", len(rep.Failed)-i)
			break
		}
		prog.Printf("not published: %v\n", pe)
	}
	if rep.LookupErr != nil {
		prog.Printf("warning: looking up completed jobs failed (%v); jobs were published without it, so those completed more than the dedup window (%s) ago are sent again\n", rep.LookupErr, cfg.DedupWindow)
		done = nil
	}
	for _, note := range rep.RerunNotes() {
		prog.Printf("%s\n", note)
	}
	if rep.RetireErr != nil {
		prog.Printf("warning: %v; `enqueue redrive` of those batches would send the jobs sent again once more\n", rep.RetireErr)
	}
	prog.Printf("%s\n", publishSummary(o.batch, rep))
	if pubErr != nil || len(rep.Failed) > 0 {
		if pubErr == nil {
			pubErr = fmt.Errorf("%d jobs were not published", len(rep.Failed))
		}
		return &exitError{exitBroker, pubErr}
	}
	fmt.Fprintln(stdout, o.batch)
	if col == nil {
		return nil
	}

	// Jobs that were not published (completed before, or enqueued by
	// another run) have their results elsewhere.
	earlierErr := make(chan error, 1)
	go func() { earlierErr <- rep.CollectEarlier(wctx, js, names, done, col) }()
	select {
	case err = <-waitErr:
		cancelWait()
		if eerr := <-earlierErr; err == nil && !errors.Is(eerr, context.Canceled) {
			err = eerr
		}
	case err = <-earlierErr:
		if err != nil {
			cancelWait()
			<-waitErr
		} else {
			err = <-waitErr
		}
	}
	prog.Finish()
	if outFile != nil {
		if cerr := outFile.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return &exitError{exitBroker, fmt.Errorf("waiting for results: %w", err)}
	}
	col.Summary.EarlierRuns, col.Summary.SentAgain = rep.EarlierRuns, rep.Resent
	col.Summary.Finish(time.Since(start))
	if err := breakers.Poll(ctx); err != nil {
		prog.Printf("warning: reading the workers' breaker board failed (%v); open breakers may be missing below\n", err)
	}
	if o.jsonSummary {
		b, _ := json.Marshal(struct {
			*enqueue.Summary
			Breakers []enqueue.SeenBreaker `json:"breakers_opened,omitempty"`
		}{&col.Summary, breakers.Seen()})
		fmt.Fprintln(stdout, string(b))
	} else {
		fmt.Fprintln(stderr, "batch "+o.batch+": "+col.Summary.String())
		if b := breakers.Summary(); b != "" {
			fmt.Fprintln(stderr, "batch "+o.batch+": "+b)
		}
	}
	if col.Summary.Failed > 0 || col.Summary.Missing > 0 {
		return &exitError{code: exitFailedJobs}
	}
	return nil
}

// watchBreakers follows the workers' breaker board for progress and the
// summary until stop is called; nil (and a no-op stop) if the board cannot
// be opened, which only costs the information, with a warning.
func watchBreakers(ctx context.Context, js jetstream.JetStream, names queue.Names, warnf func(string, ...any)) (w *enqueue.BreakerWatch, stop func()) {
	board, err := queue.OpenBreakerBoard(ctx, js, names, 0)
	if err != nil {
		warnf("warning: the workers' breaker board cannot be read (%v); open breakers are not shown\n", err)
		return nil, func() {}
	}
	w = enqueue.NewBreakerWatch(board, 2*time.Second)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(wctx) }()
	return w, func() { cancel(); <-done }
}

// publishSummary is the line that says what publishing did.
func publishSummary(batch string, rep *enqueue.PublishReport) string {
	msg := fmt.Sprintf("batch %s: %d published", batch, rep.Published)
	if rep.Resent > 0 {
		msg += fmt.Sprintf(" (%d sent again: their earlier run sent nothing)", rep.Resent)
	}
	if rep.CompletedEarlier > 0 {
		msg += fmt.Sprintf(", %d completed by an earlier run and not sent again", rep.CompletedEarlier)
	}
	if rep.Duplicates > 0 {
		msg += fmt.Sprintf(", %d already enqueued (same id within the dedup window) and skipped", rep.Duplicates)
	}
	if len(rep.Failed) > 0 {
		msg += fmt.Sprintf(", %d refused by the broker", len(rep.Failed))
	}
	if s := rep.Elapsed.Seconds(); s > 0 {
		n := rep.Published + rep.CompletedEarlier + rep.Duplicates + len(rep.Failed)
		msg += fmt.Sprintf(" in %.1fs (%.0f jobs/s)", s, float64(n)/s)
	}
	return msg
}

func newBatchID() string {
	return time.Now().UTC().Format("20060102-150405") + "-" + randomHex(6)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
