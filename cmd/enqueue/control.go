package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/pkg/job"
)

var controlUsage = map[string]string{
	"pause":  "BATCH [--json]   stop sending the batch's jobs across the fleet; requests in flight finish",
	"resume": "BATCH [--json]   send the batch's jobs again (also the open jobs of a cancelled batch)",
	"cancel": "BATCH [--wait] [--timeout D] [--json]   end every open job of the batch with a cancelled result; nothing of it is sent once this returns",
}

// controlFlags are cancel's own flags.
type controlFlags struct {
	wait    bool
	timeout time.Duration
}

// runControl pauses, resumes or cancels a batch.
func runControl(ctx context.Context, action string, args []string, stdout, stderr io.Writer) error {
	a := newAdmin(action, controlUsage[action], stderr)
	var cf controlFlags
	if action == "cancel" {
		a.fs.BoolVar(&cf.wait, "wait", false, "then wait until every open job of the batch has its cancelled result")
		a.fs.DurationVar(&cf.timeout, "timeout", queue.DefaultCancelTimeout, "how long to wait for requests in flight to finish")
	}
	pos, err := a.parse(args)
	if err != nil {
		return err
	}
	defer a.close()
	if len(pos) != 1 || !job.ValidBatch(pos[0]) {
		return &exitError{exitUsage, errors.New("give exactly one valid batch id")}
	}
	batch := pos[0]
	if err := a.checkBatch(ctx, batch); err != nil {
		return err
	}
	ctl, err := queue.NewControl(ctx, a.js, a.names)
	if err != nil {
		return &exitError{exitBroker, err}
	}
	ctl.Fence.Expect = fleetrate.ExpectedWorkers(ctx, a.js, a.names.Prefix, time.Now())
	start := time.Now()
	var rep *queue.ControlReport
	switch action {
	case "pause":
		rep, err = ctl.Pause(ctx, batch)
	case "resume":
		rep, err = ctl.Resume(ctx, batch)
	default:
		said := ""
		rep, err = ctl.Cancel(ctx, batch, queue.CancelOptions{Timeout: cf.timeout, OnWait: func(f queue.FenceResult) {
			// Said again only when it changes: a fence every 250ms.
			if line := fmt.Sprintf("batch %s: waiting for %d requests in flight to finish (%s)", batch, f.Running, runningOn(f)); line != said {
				fmt.Fprintln(stderr, line)
				said = line
			}
		}})
	}
	if err != nil {
		return &exitError{exitBroker, fmt.Errorf("%s %s: %w", action, batch, err)}
	}
	return a.reportControl(ctx, rep, cf, start, stdout, stderr)
}

// runningOn lists which workers still run the batch's jobs.
func runningOn(f queue.FenceResult) string {
	var parts []string
	for _, r := range f.Replies {
		if r.Running > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d", termsafe.String(r.Worker), r.Running))
		}
	}
	return strings.Join(parts, ", ")
}

// controlOutput is what --json prints.
type controlOutput struct {
	*queue.ControlReport
	// Cancelled, after cancel --wait, counts the batch's cancelled results
	// stored since the cancel.
	Cancelled *int `json:"cancelled,omitempty"`
}

// reportControl says what happened, waits for cancel --wait, and turns a
// timed-out cancel into its exit status.
func (a *admin) reportControl(ctx context.Context, rep *queue.ControlReport, cf controlFlags, start time.Time, stdout, stderr io.Writer) error {
	out := controlOutput{ControlReport: rep}
	for _, w := range rep.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", termsafe.Lines(w))
	}
	if len(rep.Fence.Missing) > 0 {
		fmt.Fprintf(stderr, "warning: workers %s did not confirm within the fence (stopped, or cut off? each applies the new state when its watch of %s catches up)\n",
			termsafe.String(strings.Join(rep.Fence.Missing, ", ")), a.names.BatchesBucket())
	}
	if rep.Fence.Confirmed() == 0 {
		fmt.Fprintf(stderr, "warning: no worker answered (none running?): the state is stored, and workers apply it when they start\n")
	}
	if !a.asJSON {
		fmt.Fprintln(stdout, controlLine(rep))
	}
	if rep.TimedOut {
		return a.printControlJSON(out, stdout, &exitError{exitBroker, fmt.Errorf("cancel %s: %d requests still in flight after %s (%s); the batch is cancelled and nothing else of it is sent, they store their results when they finish, and jobs waiting out a retry delay are cancelled when it ends",
			rep.Batch, rep.Fence.Running, cf.timeout, runningOn(rep.Fence))})
	}
	if cf.wait {
		last := uint64(1<<64 - 1)
		err := queue.WaitNoOpen(ctx, a.js, a.names, rep.Batch, 250*time.Millisecond, func(open uint64) {
			if open != last && open > 0 && !a.asJSON {
				fmt.Fprintf(stderr, "batch %s: %d jobs still open\n", rep.Batch, open)
			}
			last = open
		})
		if err != nil {
			return &exitError{exitBroker, fmt.Errorf("waiting for batch %s: %w", rep.Batch, err)}
		}
		// Read from a minute before the cancel: the clocks may disagree.
		n, err := queue.CancelledResults(ctx, a.js, a.names, rep.Batch, start.Add(-time.Minute))
		if err != nil {
			return &exitError{exitBroker, err}
		}
		rep.Open, out.Cancelled = 0, &n
		if !a.asJSON {
			fmt.Fprintf(stdout, "batch %s: no job open; %d cancelled results\n", rep.Batch, n)
		}
	}
	return a.printControlJSON(out, stdout, nil)
}

func (a *admin) printControlJSON(out controlOutput, stdout io.Writer, err error) error {
	if a.asJSON {
		b, _ := json.Marshal(out)
		fmt.Fprintln(stdout, string(termsafe.JSON(b)))
	}
	return err
}

// controlLine is the human line: what happened, to how many jobs, and how
// many workers confirmed it.
func controlLine(rep *queue.ControlReport) string {
	workers := fmt.Sprintf("%d workers confirmed", rep.Fence.Confirmed())
	already := ""
	if rep.Previous == rep.State {
		already = fmt.Sprintf(" (it was %s already)", rep.State)
	}
	switch rep.Action {
	case "pause":
		finishing := ""
		if rep.Fence.Running > 0 {
			finishing = fmt.Sprintf(", %d requests in flight finishing", rep.Fence.Running)
		}
		return fmt.Sprintf("batch %s paused%s: %d open jobs held; %s%s", rep.Batch, already, rep.Open, workers, finishing)
	case "resume":
		return fmt.Sprintf("batch %s resumed%s (priority %s): %d open jobs to run; %s", rep.Batch, already, rep.Priority, rep.Open, workers)
	}
	return fmt.Sprintf("batch %s cancelled%s: nothing more of it is sent; %d jobs were open, each not running then ends with a cancelled result; %s",
		rep.Batch, already, rep.Open, workers)
}
