package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/natsconn"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// runResults writes a batch's stored results as JSON Lines, at any time
// within the results' retention (JETPOST_RESULTS_MAX_AGE), whether or not
// the batch is finished: one per job, the latest, as a re-drive or a re-run
// adds a result for a job sent again.
func runResults(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enqueue results", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", "", "NATS URL (default $JETPOST_NATS_URL or "+natsconn.DefaultURL+")")
	out := fs.String("out", "-", "write the results to this file (- for standard output)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: enqueue results BATCH [--out FILE|-] [--nats URL]")
		fmt.Fprintln(stderr, "\nWrites the results stored for BATCH as JSON Lines, in the order they were stored,")
		fmt.Fprintln(stderr, "one per job: the latest (a re-drive supersedes a job's earlier result).")
		fs.PrintDefaults()
	}
	// The batch may come before or after the flags.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return &exitError{code: exitUsage}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 {
		fs.Usage()
		return &exitError{exitUsage, errors.New("give one batch id")}
	}
	batch := pos[0]
	if !job.ValidBatch(batch) {
		return &exitError{exitUsage, fmt.Errorf("batch %q: use 1 to 64 characters of [A-Za-z0-9_-]", batch)}
	}
	cfg, err := config.LoadCommon()
	if err != nil {
		return &exitError{exitUsage, err}
	}
	if *natsURL == "" {
		*natsURL = cfg.NatsURL
	}
	if *natsURL == "" {
		*natsURL = natsconn.DefaultURL
	}
	nc, err := natsconn.Connect(*natsURL, cfg, "jetpost-enqueue", false, zerolog.Nop())
	if err != nil {
		return &exitError{exitBroker, err}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return &exitError{exitBroker, err}
	}
	names := queue.NewNames(cfg.SubjectPrefix)

	w := stdout
	var f *os.File
	if *out != "-" {
		if f, err = os.Create(*out); err != nil {
			return &exitError{exitUsage, err}
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	st, err := queue.ReadLatestResults(ctx, js, names, batch, func(_ uint64, data []byte) error {
		_, _ = bw.Write(data)
		return bw.WriteByte('\n')
	})
	if err == nil {
		err = bw.Flush()
	}
	if err == nil && f != nil {
		err = f.Close()
	}
	if err != nil {
		if f != nil {
			_ = os.Remove(*out) // never leave a partial file behind
		}
		return &exitError{exitBroker, fmt.Errorf("reading results of batch %s: %w", batch, err)}
	}
	n := st.Results
	var superseded string
	if st.Superseded > 0 {
		superseded = fmt.Sprintf(" (%d superseded by a later run of the same job, left out)", st.Superseded)
	}
	if f != nil {
		fmt.Fprintf(stderr, "batch %s: %d results written to %s%s\n", batch, n, *out, superseded)
	} else {
		fmt.Fprintf(stderr, "batch %s: %d results%s\n", batch, n, superseded)
	}
	if n == 0 {
		fmt.Fprintf(stderr, "(no results stored for batch %s: unknown batch, not finished any job yet, or older than JETPOST_RESULTS_MAX_AGE=%s)\n", batch, cfg.ResultsMaxAge)
	}
	return nil
}
