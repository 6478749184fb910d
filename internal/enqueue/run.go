package enqueue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/internal/tracing"
	"github.com/jetpost/jetpost/pkg/job"
)

// Options is one enqueue run: what the command line and the configuration
// decided.
type Options struct {
	Inputs []*Input
	Batch  string
	Rate   float64 // the batch's own fleet-wide limit per host; 0: none
	// Priority is the batch's weight (queue.ParsePriority); 0 keeps the
	// weight of a batch that has an entry already, else normal.
	Priority    int
	SkipInvalid bool // publish the valid jobs when some are invalid
	Force       bool // send every job again
	Window      int  // publishes awaiting the broker's ack at once
	// Wait collects every job's result; OutPath, with Wait, writes them as
	// JSON Lines to a file ("-": Stdout).
	Wait     bool
	OutPath  string
	Progress ProgressMode
	Names    queue.Names
	Streams  queue.StreamConfig
	// Connect dials the broker, once the input is known valid.
	Connect func() (*nats.Conn, error)
	// Log hears of setup retries and streams below JETPOST_REPLICAS.
	Log zerolog.Logger
	// Tracer, if set, traces the run and gives its jobs its context.
	Tracer *tracing.Tracer
	// Stdout receives the batch id once published, or for OutPath "-"
	// the results alone; Stderr input errors, progress and warnings.
	Stdout, Stderr io.Writer
}

// CancelledError is a run refused because its batch is cancelled: nothing
// was published.
type CancelledError struct{ Batch string }

func (e *CancelledError) Error() string {
	return fmt.Sprintf("batch %s is cancelled: nothing was published (its open jobs end with a cancelled result); enqueue into another batch, or run `enqueue resume %s` first to enqueue into it again", e.Batch, e.Batch)
}

// InputError is a run that failed on its input or options: nothing was
// published.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Run validates the inputs, publishes their jobs as one batch and, with
// Wait, collects one result per job. Its summary is nil without Wait. An
// *InputError means nothing was published; any other error is the
// broker's, or ctx's.
func Run(ctx context.Context, o Options) (*Summary, error) {
	start := time.Now()
	v, validated, err := prepareRun(o, start)
	if err != nil {
		return nil, err
	}
	defer v.Spool.Close()
	nc, err := o.Connect()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if err := reportTooLarge(v, nc.MaxPayload(), o.Stderr); err != nil {
		return nil, err
	}
	r := &runner{o: o, v: v, start: start}
	if err := r.open(ctx, nc); err != nil {
		return nil, err
	}
	defer r.close()
	if o.Progress != ProgressQuiet {
		fmt.Fprintf(o.Stderr, "batch %s: publishing %d jobs (priority %s; validated in %.1fs)\n", o.Batch, v.Valid,
			queue.PriorityName(r.control.Weight), validated.Seconds())
	}
	if r.control.State == queue.BatchPaused {
		fmt.Fprintf(o.Stderr, "batch %s is paused: its jobs wait until `enqueue resume %s`\n", o.Batch, o.Batch)
	}
	return r.run(ctx)
}

// prepareRun is the first pass: every input validated and spooled, the
// invalid lines listed, nothing published.
func prepareRun(o Options, start time.Time) (*Validation, time.Duration, error) {
	enqueuedAt := start.UTC()
	for _, in := range o.Inputs {
		in.SecretHeaders = o.Names.SecretHeaders
		in.IdentityKey = o.Names.IdentityKey
	}
	v, err := Prepare(o.Inputs, func(j *job.Job) {
		j.Batch = o.Batch
		j.EnqueuedAt = enqueuedAt
		j.Rate = o.Rate
	})
	validated := time.Since(start)
	// What the decoder held is garbage now; hand it back before publishing
	// allocates its window.
	debug.FreeOSMemory()
	if err != nil {
		return nil, 0, &InputError{err}
	}
	for _, le := range v.Errors {
		fmt.Fprintln(o.Stderr, termsafe.Lines(le.Error()))
	}
	if v.Invalid > len(v.Errors) {
		fmt.Fprintf(o.Stderr, "... and %d more invalid lines\n", v.Invalid-len(v.Errors))
	}
	if v.Invalid > 0 && !o.SkipInvalid {
		v.Spool.Close()
		return nil, 0, &InputError{fmt.Errorf("%d invalid lines; nothing was published (fix them, or use --skip-invalid)", v.Invalid)}
	}
	if v.Valid == 0 {
		v.Spool.Close()
		return nil, 0, &InputError{errors.New("no valid jobs in the input")}
	}
	return v, validated, nil
}

// reportTooLarge treats jobs the broker would refuse as input errors like
// any other: named by file and line, and nothing is published.
func reportTooLarge(v *Validation, maxPayload int64, stderr io.Writer) error {
	tooLarge := v.TooLarge(maxPayload)
	if len(tooLarge) == 0 {
		return nil
	}
	for _, le := range tooLarge[:min(len(tooLarge), MaxReported)] {
		fmt.Fprintln(stderr, termsafe.Lines(le.Error()))
	}
	if len(tooLarge) > MaxReported {
		fmt.Fprintf(stderr, "... and %d more jobs too large\n", len(tooLarge)-MaxReported)
	}
	return &InputError{fmt.Errorf("%d jobs are too large for the NATS server; nothing was published", len(tooLarge))}
}

// runner is one run's state once connected.
type runner struct {
	o          Options
	v          *Validation
	start      time.Time
	js         jetstream.JetStream
	done       *queue.DoneIndex // nil: completed jobs are not looked up
	legacy     bool             // the done bucket holds markers keyed by the id alone
	forceToken string
	col        *Collector // nil without Wait
	outFile    *os.File
	prog       *Progress
	breakers   *BreakerWatch
	stopWatch  func()
	control    queue.BatchControl // the batch's entry, written before publishing
}

// enterBatch writes the batch's entry before any job is published, so that
// workers see the batch (and its weight) at once: a new batch runs, an
// existing running or paused one keeps its state (and its weight unless
// Priority is given), a cancelled one is refused.
func (r *runner) enterBatch(ctx context.Context) error {
	bs, err := queue.OpenBatches(ctx, r.js, r.o.Names, r.o.Streams)
	if err != nil {
		return err
	}
	// Read first: a refused run must not touch the entry (its time marks
	// the cancel).
	cur, _, err := bs.Get(ctx, r.o.Batch)
	if err != nil {
		return err
	}
	if cur.State == queue.BatchCancelled {
		return &CancelledError{Batch: r.o.Batch}
	}
	r.control, _, err = bs.Update(ctx, r.o.Batch, func(c *queue.BatchControl) {
		if r.o.Priority > 0 {
			c.Weight = r.o.Priority
		}
	})
	if err != nil {
		return err
	}
	if r.control.State == queue.BatchCancelled { // cancelled meanwhile
		return &CancelledError{Batch: r.o.Batch}
	}
	return nil
}

// open sets the streams up and, with Wait, the collector and its output.
func (r *runner) open(ctx context.Context, nc *nats.Conn) error {
	o := r.o
	var err error
	// A lost ack must end as an error that is retried, not as a publish
	// waited for forever.
	r.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(o.Window), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return err
	}
	// Several enqueues and workers may start at once against a slow
	// cluster: each try is bounded, and each failure says what is missing.
	if err := queue.EnsureStores(ctx, r.js, o.Names, o.Streams, queue.SetupOptions{Log: o.Log}); err != nil {
		return fmt.Errorf("setting up streams: %w", err)
	}
	if err := r.enterBatch(ctx); err != nil {
		return err
	}
	if err := r.openDone(ctx); err != nil {
		return err
	}
	if o.Wait {
		if err := r.openCollector(ctx); err != nil {
			return err
		}
	}
	r.prog = NewProgress(o.Stderr, o.Progress, r.v.Valid, o.Wait)
	r.stopWatch = func() {}
	if r.col != nil {
		r.col.OnOutcome = r.prog.Result
		r.breakers, r.stopWatch = watchBreakers(ctx, r.js, o.Names)
		r.prog.ShowBreakers(r.breakers)
	}
	return nil
}

// openDone opens the completion markers (queue.Setup created their
// bucket), or, with Force, checks that the batch is new and makes the token
// that sends every job again.
func (r *runner) openDone(ctx context.Context) error {
	o := r.o
	if !o.Force {
		r.done = queue.NewDoneIndex(r.js, o.Names)
		var err error
		r.legacy, err = r.done.HasLegacy(ctx)
		return err
	}
	n, err := queue.ResultBatchCount(ctx, r.js, o.Names, o.Batch)
	if err != nil {
		return err
	}
	if n > 0 {
		return &InputError{fmt.Errorf("--force: batch %s already has %d results; a forced run needs a batch of its own (leave --batch out, or choose another)", o.Batch, n)}
	}
	r.forceToken = randomHex(6)
	return nil
}

// openCollector expects exactly the spooled jobs and opens the output.
func (r *runner) openCollector(ctx context.Context) error {
	r.col = NewCollector()
	if err := r.v.ExpectAll(r.col); err != nil {
		return &InputError{err}
	}
	switch r.o.OutPath {
	case "":
	case "-":
		r.col.Out = r.o.Stdout
	default:
		f, err := os.Create(r.o.OutPath)
		if err != nil {
			return &InputError{err}
		}
		r.outFile = f
		r.col.Out = f
	}
	if r.done != nil {
		// Results already stored (a batch id used again) are earlier runs':
		// what this run needs of them is found through the markers.
		var err error
		if r.col.After, err = queue.ResultsLastSeq(ctx, r.js, r.o.Names); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) close() {
	if r.stopWatch != nil {
		r.stopWatch()
	}
	if r.outFile != nil {
		r.outFile.Close() // on early returns; closed and checked by wait
	}
}

// run publishes and, with Wait, collects.
func (r *runner) run(ctx context.Context) (*Summary, error) {
	o := r.o
	r.prog.Start()
	defer r.prog.Finish()
	// Results are read from the start of the batch's subject, so the
	// collector may start now and catch results of jobs just published.
	published := make(chan *PublishReport, 1)
	collected := make(chan error, 1)
	wctx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	var key func(string) uint64
	if r.col != nil {
		key = r.col.Key
		go func() { collected <- r.col.Collect(wctx, r.js, o.Names, o.Batch, r.done, published) }()
	}
	pctx, headers, endTrace := r.startTrace(ctx)
	rep, err := Publish(pctx, r.js, r.v.Spool, PublishOptions{
		Batch: o.Batch, Names: o.Names, Window: o.Window, Done: r.done, Legacy: r.legacy, ForceToken: r.forceToken,
		Key: key, Progress: r.prog, Headers: headers,
	})
	if err == nil && len(rep.Failed) > 0 {
		err = fmt.Errorf("%d jobs were not published", len(rep.Failed))
	}
	endTrace(rep, err)
	r.reportPublish(rep)
	if err != nil {
		return nil, err
	}
	if o.OutPath != "-" { // there stdout is JSON Lines, each result naming its batch
		fmt.Fprintln(o.Stdout, o.Batch)
	}
	if r.col == nil {
		return nil, nil
	}
	published <- rep
	return r.wait(ctx, rep, <-collected)
}

// reportPublish says what publishing did.
func (r *runner) reportPublish(rep *PublishReport) {
	for i, pe := range rep.Failed {
		if i == MaxReported {
			r.prog.Printf("... and %d more jobs not published\n", len(rep.Failed)-i)
			break
		}
		r.prog.Printf("not published: %v\n", pe)
	}
	if rep.LookupErr != nil {
		r.prog.Printf("warning: looking up completed jobs failed (%v); jobs were published without it, so those completed more than the dedup window (%s) ago are sent again\n", rep.LookupErr, r.o.Streams.DedupWindow)
	}
	if rep.RetireErr != nil {
		r.prog.Printf("warning: %v; `enqueue redrive` of those batches would send the jobs sent again once more\n", rep.RetireErr)
	}
	// Quiet leaves out what only informs: the line stays when it counts
	// jobs not published.
	quiet := r.o.Progress == ProgressQuiet
	if !quiet {
		for _, note := range rep.RerunNotes() {
			r.prog.Printf("%s\n", note)
		}
	}
	if !quiet || len(rep.Failed) > 0 {
		r.prog.Printf("%s\n", rep.Line(r.o.Batch))
	}
}

// wait completes the summary once collecting ended with err.
func (r *runner) wait(ctx context.Context, rep *PublishReport, err error) (*Summary, error) {
	r.prog.Finish()
	if r.outFile != nil {
		if cerr := r.outFile.Close(); err == nil {
			err = cerr
		}
		r.outFile = nil
	}
	if err != nil {
		return nil, fmt.Errorf("waiting for results: %w", err)
	}
	s := &r.col.Summary
	s.EarlierRuns, s.SentAgain = rep.EarlierRuns, rep.Resent
	s.Priority, s.Weight = queue.PriorityName(r.control.Weight), r.control.Weight
	s.Finish(time.Since(r.start))
	if err := r.breakers.Poll(ctx); err != nil {
		r.prog.Printf("warning: reading the workers' breaker board failed (%v); open breakers may be missing below\n", err)
	}
	s.Breakers, s.breakerLine = r.breakers.Seen(), r.breakers.Summary()
	return s, nil
}

// watchBreakers follows the workers' breaker board for progress and the
// summary until stop is called. The board is the workers' to create: until
// one has, it lists nothing.
func watchBreakers(ctx context.Context, js jetstream.JetStream, names queue.Names) (w *BreakerWatch, stop func()) {
	w = NewBreakerWatch(queue.ReadBreakerBoard(js, names), 2*time.Second)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(wctx) }()
	return w, func() { cancel(); <-done }
}

// Line is the line that says what publishing did.
func (rep *PublishReport) Line(batch string) string {
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

// NewBatchID is a batch id for a run given none: when, and 12 random hex
// digits.
func NewBatchID() string {
	return time.Now().UTC().Format("20060102-150405") + "-" + randomHex(6)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
