package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/natsconn"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/queue"
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
	a.fs.StringVar(&a.natsURL, "nats", "", "NATS URL (default $JETPOST_NATS_URL or "+natsconn.DefaultURL+")")
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
	var pos []string
	for {
		if err := a.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &exitError{code: 0}
			}
			return nil, &exitError{code: exitUsage}
		}
		if a.fs.NArg() == 0 {
			break
		}
		pos = append(pos, a.fs.Arg(0))
		args = a.fs.Args()[1:]
	}
	cfg, err := config.LoadCommon()
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	a.cfg = cfg
	if a.natsURL == "" {
		a.natsURL = cfg.NatsURL
	}
	if a.natsURL == "" {
		a.natsURL = natsconn.DefaultURL
	}
	a.nc, err = natsconn.Connect(a.natsURL, cfg, "jetpost-enqueue", false, zerolog.Nop())
	if err != nil {
		return nil, &exitError{exitBroker, err}
	}
	a.js, err = jetstream.New(a.nc)
	if err != nil {
		a.nc.Close()
		return nil, &exitError{exitBroker, err}
	}
	a.names = queue.NewNames(cfg.SubjectPrefix)
	return pos, nil
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
	}
	tw := tabwriter.NewWriter(stdout, 1, 0, 2, ' ', 0)
	if !a.asJSON {
		fmt.Fprintln(tw, "SEQ\tBATCH\tID\tREASON\tSTATUS\tATTEMPTS\tERROR")
	}
	n := 0
	err = queue.DeadLetters(ctx, a.js, a.names, batch, func(dl queue.StoredDeadLetter) error {
		n++
		if a.asJSON {
			b, err := json.Marshal(redactDeadLetter(dl, a.cfg.SecretHeaders()))
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(stdout, string(b))
			return err
		}
		r := dl.Result
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%s\n", dl.Seq, r.Batch, r.ID, r.Reason, r.Status, r.Attempts, clip(oneLine(r.Error), 80))
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

// shownDeadLetter is a dead letter as listed: the job decoded, its secret
// header values replaced.
type shownDeadLetter struct {
	Seq    uint64          `json:"seq"`
	Result job.Result      `json:"result"`
	Job    json.RawMessage `json:"job"`
}

func redactDeadLetter(dl queue.StoredDeadLetter, secret []string) shownDeadLetter {
	out := shownDeadLetter{Seq: dl.Seq, Result: dl.Result, Job: dl.Job}
	var j job.Job
	if err := json.Unmarshal(dl.Job, &j); err == nil {
		j.Headers = job.RedactHeaders(j.Headers, secret)
		j.URL, j.Callback = job.RedactURL(j.URL), job.RedactURL(j.Callback)
		if b, err := json.Marshal(&j); err == nil {
			out.Job = b
		}
		return out
	}
	// Not a job at all (a poison message): its text may hold anything,
	// including credentials, so it is not shown.
	out.Job = json.RawMessage(`"(not a valid job; content withheld)"`)
	return out
}

// runRedrive re-publishes a batch's dead letters as fresh jobs.
func runRedrive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdmin("redrive", "BATCH   re-publish the batch's dead letters as fresh jobs", stderr)
	pos, err := a.parse(args)
	if err != nil {
		return err
	}
	defer a.close()
	if len(pos) != 1 || !job.ValidBatch(pos[0]) {
		return &exitError{exitUsage, errors.New("give exactly one valid batch id")}
	}
	rep, err := queue.Redrive(ctx, a.js, a.names, pos[0])
	for _, s := range rep.Skipped {
		fmt.Fprintln(stderr, "skipped:", s)
	}
	fmt.Fprintf(stdout, "batch %s: %d jobs re-driven, %d skipped\n", pos[0], rep.Redriven, len(rep.Skipped))
	if err != nil {
		return &exitError{exitBroker, err}
	}
	return nil
}

// runStatus shows where batches stand and which breakers are open.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdmin("status", "[BATCH] [--json]   jobs open, results, dead letters, consumer lag, open breakers", stderr)
	pos, err := a.parse(args)
	if err != nil {
		return err
	}
	defer a.close()
	batch := ""
	if len(pos) > 0 {
		batch = pos[0]
	}
	o, err := queue.Status(ctx, a.js, a.names, batch)
	if err != nil {
		return &exitError{exitBroker, err}
	}
	if a.asJSON {
		b, _ := json.Marshal(o)
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tOPEN\tRESULTS\tDEAD LETTERS")
	for _, b := range o.Batches {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", b.Batch, b.Open, b.Results, b.DeadLetters)
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "\nconsumer: %d not yet delivered (lag), %d delivered and unsettled (in flight or waiting to retry), %d pull requests waiting\n",
		o.Lag, o.Unacked, o.PullsWaiting)
	if len(o.Breakers) == 0 {
		fmt.Fprintln(stdout, "breakers: all closed")
		return nil
	}
	fmt.Fprintln(stdout, "breakers not closed:")
	tw = tabwriter.NewWriter(stdout, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  HOST\tSTATE\tWORKER\tSINCE")
	for _, b := range o.Breakers {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", b.Host, b.State, b.Worker, b.Since.Format("15:04:05"))
	}
	return tw.Flush()
}
