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

	"github.com/jetpost/jetpost/internal/natsconn"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/pkg/job"
)

// runResults writes a batch's stored results as JSON Lines, at any time
// within the results' retention (JETPOST_RESULTS_MAX_AGE), whether or not
// the batch is finished: one per job, the latest, as a re-drive or a re-run
// adds a result for a job sent again.
func runResults(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enqueue results", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", "", natsconn.URLFlagHelp)
	out := fs.String("out", "-", "write the results to this file (- for standard output)")
	quiet := fs.Bool("quiet", false, "print nothing but errors (the results still go where --out says)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: enqueue results BATCH [--out FILE|-] [--quiet] [--nats URL]")
		fmt.Fprintln(stderr, "\nWrites the results stored for BATCH as JSON Lines, in the order they were stored,")
		fmt.Fprintln(stderr, "one per job: the latest (a re-drive supersedes a job's earlier result).")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return &exitError{exitUsage, errors.New("give one batch id")}
	}
	batch := pos[0]
	if !job.ValidBatch(batch) {
		return &exitError{exitUsage, fmt.Errorf("batch %q: use 1 to 64 characters of [A-Za-z0-9_-]", batch)}
	}
	cfg, nc, js, err := connectAdmin(*natsURL, stderr)
	if err != nil {
		return err
	}
	defer nc.Close()
	names := queue.NewNames(cfg.SubjectPrefix)
	// A batch with results is known from the results stream alone; for
	// one without, an account that may read nothing else (examples/
	// nats-permissions.conf) gets the note below instead of an answer.
	known, knownErr := queue.BatchStored(ctx, js, names, batch)
	if knownErr == nil && !known {
		return unknownBatch(batch, cfg.ResultsMaxAge)
	}
	st, err := writeResults(ctx, js, names, batch, *out, stdout)
	if err != nil {
		return err
	}
	if *quiet {
		return nil
	}
	var superseded string
	if st.Superseded > 0 {
		superseded = fmt.Sprintf(" (%d superseded by a later run of the same job, left out)", st.Superseded)
	}
	if *out != "-" {
		fmt.Fprintf(stderr, "batch %s: %d results written to %s%s\n", batch, st.Results, *out, superseded)
	} else {
		fmt.Fprintf(stderr, "batch %s: %d results%s\n", batch, st.Results, superseded)
	}
	if st.Results == 0 {
		fmt.Fprintf(stderr, "(no results stored for batch %s: its jobs are still open, or their results are older than JETPOST_RESULTS_MAX_AGE=%s)\n", batch, cfg.ResultsMaxAge)
	}
	return nil
}

// writeResults writes the batch's latest results to the file out (- for
// stdout), never leaving a partial file behind.
func writeResults(ctx context.Context, js jetstream.JetStream, names queue.Names, batch, out string, stdout io.Writer) (queue.LatestStats, error) {
	w := stdout
	var f *os.File
	if out != "-" {
		var err error
		if f, err = os.Create(out); err != nil {
			return queue.LatestStats{}, &exitError{exitUsage, err}
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	st, err := queue.ReadLatestResults(ctx, js, names, batch, func(_ uint64, data []byte) error {
		_, _ = bw.Write(termsafe.JSON(data))
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
			_ = os.Remove(out)
		}
		return st, &exitError{exitBroker, fmt.Errorf("reading results of batch %s: %w", batch, err)}
	}
	return st, nil
}
