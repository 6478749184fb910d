package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/dlqview"
	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/natsconn"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/pkg/hostlimit"
	"github.com/jetpost/jetpost/pkg/job"
)

// admin is what the inspection subcommands share: flags, configuration and
// a connection.
type admin struct {
	fs      *flag.FlagSet
	natsURL string
	asJSON  bool
	cfg     *config.Common
	nc      *nats.Conn
	js      jetstream.JetStream
	names   queue.Names
}

func newAdmin(name, usage string, stderr io.Writer) *admin {
	a := &admin{fs: flag.NewFlagSet("enqueue "+name, flag.ContinueOnError)}
	a.fs.SetOutput(stderr)
	a.fs.StringVar(&a.natsURL, "nats", "", natsconn.URLFlagHelp)
	a.fs.BoolVar(&a.asJSON, "json", false, "print JSON instead of a table")
	a.fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: enqueue "+name+" "+usage)
		a.fs.PrintDefaults()
	}
	return a
}

// parse reads the flags (which may follow the positional arguments) and
// connects. It returns the positional arguments.
func (a *admin) parse(args []string) ([]string, error) {
	pos, err := parseInterspersed(a.fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, &exitError{code: 0}
		}
		return nil, err
	}
	a.cfg, a.nc, a.js, err = connectAdmin(a.natsURL, a.fs.Output())
	if err != nil {
		return nil, err
	}
	a.names = queue.NewNames(a.cfg.SubjectPrefix)
	a.names.SecretHeaders = a.cfg.SecretHeaders() // a re-drive's message id holds the job's identity
	a.names.IdentityKey = []byte(a.cfg.IdentityKey)
	return pos, nil
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, which it returns; after "--" every argument is
// positional. A bad flag is a usage error; -h is flag.ErrHelp.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &exitError{code: exitUsage}
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// connectAdmin loads the configuration and connects quietly, for the
// subcommands that read the broker's state.
func connectAdmin(natsURL string, stderr io.Writer) (*config.Common, *nats.Conn, jetstream.JetStream, error) {
	cfg, err := loadConfig(stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	nc, err := natsconn.Connect(natsconn.URL(natsURL, cfg), cfg, "jetpost-enqueue", false, zerolog.Nop())
	if err != nil {
		return nil, nil, nil, &exitError{exitBroker, err}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, &exitError{exitBroker, err}
	}
	return cfg, nc, js, nil
}

// checkBatch refuses a batch id that is not one, or that has neither an
// entry in the batches bucket nor anything stored.
func (a *admin) checkBatch(ctx context.Context, batch string) error {
	if !job.ValidBatch(batch) {
		return &exitError{exitUsage, fmt.Errorf("batch %q: use 1 to 64 characters of [A-Za-z0-9_-]", batch)}
	}
	return checkBatchKnown(ctx, a.js, a.names, batch, a.cfg.ResultsMaxAge)
}

func (a *admin) close() {
	if a.nc != nil {
		a.nc.Close()
	}
}

// runDLQ lists a batch's dead letters with secrets redacted.
func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdmin("dlq", "[BATCH] [--json]   list dead letters (secret headers redacted)", stderr)
	pos, err := a.parse(args)
	if err != nil {
		return err
	}
	defer a.close()
	if len(pos) > 1 {
		return &exitError{exitUsage, errors.New("give at most one batch")}
	}
	batch := ""
	if len(pos) == 1 {
		batch = pos[0]
		if err := a.checkBatch(ctx, batch); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(stdout, 1, 0, 2, ' ', 0)
	if !a.asJSON {
		fmt.Fprintln(tw, "SEQ\tBATCH\tID\tSOURCE\tREASON\tSTATUS\tATTEMPTS\tERROR")
	}
	n := 0
	err = queue.DeadLetters(ctx, a.js, a.names, batch, func(dl queue.StoredDeadLetter) error {
		n++
		if a.asJSON {
			b, err := json.Marshal(dlqview.Redact(dl, a.cfg.SecretHeaders()))
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(stdout, string(termsafe.JSON(b)))
			return err
		}
		r := dl.Result
		reason, status, attempts, msg := dlqview.Line(dlqview.Shown{Reason: cmp.Or(dl.Reason, r.Reason), Result: r})
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", dl.Seq, oneLine(r.Batch), oneLine(r.ID), cmp.Or(oneLine(r.Source), "-"),
			oneLine(string(reason)), status, attempts, clip(oneLine(msg), 80))
		return nil
	})
	if err != nil {
		return &exitError{exitBroker, err}
	}
	if !a.asJSON {
		_ = tw.Flush()
		fmt.Fprintf(stderr, "%d dead letters\n", n)
	}
	return nil
}

// runRedrive re-publishes a batch's dead letters: failed jobs as fresh
// jobs, failed callbacks as callback messages (the POST alone).
func runRedrive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdmin("redrive", "BATCH   re-publish the batch's dead letters: failed jobs as fresh jobs, failed callbacks as the callback POST alone", stderr)
	pos, err := a.parse(args)
	if err != nil {
		return err
	}
	defer a.close()
	if len(pos) != 1 || !job.ValidBatch(pos[0]) {
		return &exitError{exitUsage, errors.New("give exactly one valid batch id")}
	}
	if err := a.checkBatch(ctx, pos[0]); err != nil {
		return err
	}
	rep, err := queue.Redrive(ctx, a.js, a.names, pos[0])
	for _, s := range rep.Skipped {
		fmt.Fprintln(stderr, "skipped:", oneLine(s))
	}
	fmt.Fprintf(stdout, "batch %s: %d jobs re-driven, %d skipped, %d callbacks re-sent (their jobs' results stand)\n",
		pos[0], rep.Redriven, len(rep.Skipped), rep.Callbacks)
	if err != nil {
		return &exitError{exitBroker, err}
	}
	return nil
}

// runStatus shows where batches stand, which breakers are open, and each
// worker's limits per host.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdmin("status", "[BATCH] [--json]   each batch's state, priority, share, jobs open, in flight, rate, results, dead letters; consumer lag, open breakers, limits per host, replication", stderr)
	pos, err := a.parse(args)
	if err != nil {
		return err
	}
	defer a.close()
	if len(pos) > 1 {
		return &exitError{exitUsage, errors.New("give at most one batch")}
	}
	batch := ""
	if len(pos) == 1 {
		batch = pos[0]
		if err := a.checkBatch(ctx, batch); err != nil {
			return err
		}
	}
	o, err := queue.Status(ctx, a.js, a.names, batch, queue.StatusOptions{RateWindow: statusRateWindow})
	if err != nil {
		return &exitError{exitBroker, err}
	}
	o.Replication = queue.Replication(ctx, a.js, a.names, a.cfg.Replicas, 5*time.Second)
	for _, r := range o.Replication {
		o.Warnings = append(o.Warnings, r.Problems()...)
	}
	for _, w := range o.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", termsafe.Lines(w))
	}
	// The limits are informational: without them (a permission the
	// credentials lack, a timeout) the batches and breakers still show.
	limits, err := fleetrate.ReadBoard(ctx, a.js, a.names.Prefix)
	if err != nil {
		fmt.Fprintf(stderr, "warning: %s\n", termsafe.Lines(err.Error()))
	}
	if a.asJSON {
		// Overview carries replication and warnings too.
		b, _ := json.Marshal(struct {
			queue.Overview
			HostLimits []fleetrate.WorkerLimits `json:"host_limits"`
		}{o, limits})
		fmt.Fprintln(stdout, string(termsafe.JSON(b)))
		return nil
	}
	printBatches(stdout, o)
	fmt.Fprintf(stdout, "\nconsumers: %d not yet delivered (lag), %d delivered and unsettled (in flight or waiting to retry), %d pull requests waiting\n",
		o.Lag, o.Unacked, o.PullsWaiting)
	if len(o.Breakers) == 0 {
		fmt.Fprintln(stdout, "breakers: all closed")
	} else {
		fmt.Fprintln(stdout, "breakers not closed:")
		tw := tabwriter.NewWriter(stdout, 1, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  HOST\tSTATE\tWORKER\tSINCE")
		for _, b := range o.Breakers {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", oneLine(b.Host), oneLine(string(b.State)), oneLine(b.Worker), b.Since.Format("15:04:05"))
		}
		_ = tw.Flush()
	}
	if err := printHostLimits(stdout, limits); err != nil {
		return err
	}
	return printReplication(stdout, o.Replication, a.cfg.Replicas)
}

// statusRateWindow is how far apart status reads the results stream's
// per-subject counts to measure each batch's rate.
const statusRateWindow = time.Second

// printBatches is the table of batches: state and share first, then what
// is open, moving and stored.
func printBatches(w io.Writer, o queue.Overview) {
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tSTATE\tPRIORITY\tSHARE\tOPEN\tIN FLIGHT\tRESULTS/S\tRESULTS\tCANCELLED\tDEAD LETTERS")
	for _, b := range o.Batches {
		share, cancelled := "-", "-"
		if b.Share > 0 {
			share = fmt.Sprintf("%.0f%%", 100*b.Share)
		}
		if b.Cancelled != nil {
			cancelled = fmt.Sprint(*b.Cancelled)
			if b.CancelledPartial {
				cancelled += "+" // a lower bound: status BATCH counts them all
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%.1f\t%d\t%s\t%d\n", oneLine(b.Batch), oneLine(b.State), oneLine(b.Priority), share,
			b.Open, b.InFlight, b.Rate, b.Results, cancelled, b.DeadLetters)
	}
	_ = tw.Flush()
	if o.RateWindowMS > 0 {
		fmt.Fprintf(w, "results/s: measured over %.1fs (the results stream's count per batch, read twice)\n", float64(o.RateWindowMS)/1000)
	}
}

// printReplication lists every stream and bucket with its replicas, leader
// and followers, so an operator sees what a lost node would take down.
func printReplication(w io.Writer, rs []queue.StoreReplication, want int) error {
	fmt.Fprintf(w, "replication (JETPOST_REPLICAS=%d):\n", want)
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  STREAM\tKIND\tREPLICAS\tLEADER\tFOLLOWERS\tSTATE")
	for _, r := range rs {
		reps, leader, followers := fmt.Sprint(r.Replicas), cmp.Or(termsafe.String(r.Leader), "-"), "-"
		var fs []string
		for _, p := range r.Peers {
			switch {
			case p.Offline:
				fs = append(fs, termsafe.String(p.Name)+" (offline)")
			case !p.Current:
				fs = append(fs, fmt.Sprintf("%s (lagging %d)", termsafe.String(p.Name), p.Lag))
			default:
				fs = append(fs, termsafe.String(p.Name))
			}
		}
		if len(fs) > 0 {
			followers = strings.Join(fs, ", ")
		}
		state := "ok"
		switch {
		case r.Missing:
			reps, state = "-", "not created yet"
		case r.Error != "":
			reps, state = "?", clip(oneLine(r.Error), 60)
		case len(r.Problems()) > 0:
			state = "WARNING"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", r.Stream, r.Kind, reps, leader, followers, state)
	}
	return tw.Flush()
}

// printHostLimits lists the limits by host, then worker: the concurrency
// limit each worker holds now (adaptive or fixed), what it has in flight
// and waiting, the host's recent latency and its rate limit.
func printHostLimits(w io.Writer, ws []fleetrate.WorkerLimits) error {
	type line struct {
		worker string
		h      hostlimit.HostState
	}
	var lines []line
	for _, wl := range ws {
		for _, h := range wl.Hosts {
			lines = append(lines, line{wl.Worker, h})
		}
	}
	if len(lines) == 0 {
		fmt.Fprintf(w, "host limits: none posted (%d workers running; each posts its hosts every few seconds)\n", len(ws))
		return nil
	}
	slices.SortFunc(lines, func(x, y line) int {
		return cmp.Or(strings.Compare(x.h.Host, y.h.Host), strings.Compare(x.worker, y.worker))
	})
	fmt.Fprintf(w, "host limits (%d workers):\n", len(ws))
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  HOST\tWORKER\tLIMIT\tIN FLIGHT\tWAITING\tLATENCY\tRATE LIMIT\tADMITTED\tREFUSED")
	for _, l := range lines {
		kind, lat, rate := "fixed", "-", "-"
		if l.h.Adaptive {
			kind = "adaptive"
		}
		if l.h.Latency > 0 {
			lat = l.h.Latency.Round(100 * time.Microsecond).String()
		}
		if l.h.Rate != "" {
			rate = l.h.Rate
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d %s\t%d\t%d\t%s\t%s\t%d\t%d\n", oneLine(l.h.Host), oneLine(l.worker), l.h.Limit, kind,
			l.h.InFlight, l.h.Waiting, lat, oneLine(rate), l.h.Admitted, l.h.Refused)
	}
	return tw.Flush()
}
