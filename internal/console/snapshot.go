package console

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// Snapshot is what every viewer sees at one tick. The batch fields are
// queue.Status's, the same numbers enqueue status --json prints.
type Snapshot struct {
	At           time.Time   `json:"at"`
	Worker       string      `json:"worker"` // the worker that serves the page
	Actions      bool        `json:"actions"`
	Batches      []Batch     `json:"batches"`
	MoreBatches  int         `json:"more_batches,omitempty"` // left out past maxBatches
	Lag          uint64      `json:"lag"`
	Unacked      int         `json:"unacked"`
	PullsWaiting int         `json:"pulls_waiting"`
	RateWindowMS int64       `json:"rate_window_ms"`
	Hosts        []HostRow   `json:"hosts"`
	Workers      []WorkerRow `json:"workers"`
	Warnings     []string    `json:"warnings,omitempty"`
}

// Batch is a batch's status with what the page derives from it.
type Batch struct {
	queue.BatchStatus
	// Total is results stored plus jobs open: a re-driven or re-run job
	// counts once per result.
	Total uint64 `json:"total"`
	// ETASeconds is the open jobs over the rate; absent while nothing
	// moves.
	ETASeconds *float64 `json:"eta_seconds,omitempty"`
}

// HostRow is one worker's view of one host: its limits board entry and
// its breaker.
type HostRow struct {
	Host      string  `json:"host"`
	Worker    string  `json:"worker"`
	Limit     int     `json:"limit"`
	Adaptive  bool    `json:"adaptive"`
	InFlight  int     `json:"in_flight"`
	Waiting   int     `json:"waiting"`
	LatencyMS float64 `json:"latency_ms"`
	Rate      string  `json:"rate_limit,omitempty"`
	Admitted  uint64  `json:"admitted"`
	Refused   uint64  `json:"refused"`
	// Breaker is closed unless the breakers bucket says otherwise.
	Breaker string    `json:"breaker"`
	Since   time.Time `json:"breaker_since,omitzero"`
}

// WorkerRow is a worker seen on the limits board.
type WorkerRow struct {
	Worker string    `json:"worker"`
	At     time.Time `json:"posted_at"`
	Hosts  int       `json:"hosts"`
}

// maxBatches bounds the batches a snapshot carries: a page with a
// thousand rows helps nobody; active ones come first.
const maxBatches = 300

// build joins the overview, the limits board and the breakers into a
// snapshot.
func build(o queue.Overview, ws []fleetrate.WorkerLimits, now time.Time) Snapshot {
	s := Snapshot{At: now, Lag: o.Lag, Unacked: o.Unacked, PullsWaiting: o.PullsWaiting,
		RateWindowMS: o.RateWindowMS, Warnings: o.Warnings}
	for _, b := range o.Batches {
		row := Batch{BatchStatus: b, Total: b.Results + b.Open}
		if b.Rate > 0 && b.Open > 0 && b.State == string(queue.BatchRunning) {
			eta := float64(b.Open) / b.Rate
			row.ETASeconds = &eta
		}
		s.Batches = append(s.Batches, row)
	}
	// Active first (stable: by name within each group, as status lists).
	slices.SortStableFunc(s.Batches, func(x, y Batch) int { return boolOrder(x.Active, y.Active) })
	if len(s.Batches) > maxBatches {
		s.MoreBatches, s.Batches = len(s.Batches)-maxBatches, s.Batches[:maxBatches]
	}
	ws, breakers := dropStale(ws, o.Breakers, now)
	s.Hosts, s.Workers = hostRows(ws, breakers)
	return s
}

// dropStale leaves out the workers that have not posted on the limits
// board within fleetrate.BoardFresh (the rule a fence uses to stop
// waiting for them), and their breakers: a dead worker's entry lingers
// until it expires. Breakers of workers not on the board stay.
func dropStale(ws []fleetrate.WorkerLimits, breakers []queue.BreakerEntry, now time.Time) ([]fleetrate.WorkerLimits, []queue.BreakerEntry) {
	fresh := map[string]bool{}
	for _, w := range fleetrate.FreshWorkers(ws, now) {
		fresh[w] = true
	}
	stale := map[string]bool{}
	ws = slices.DeleteFunc(slices.Clone(ws), func(w fleetrate.WorkerLimits) bool {
		stale[w.Worker] = !fresh[w.Worker]
		return stale[w.Worker]
	})
	breakers = slices.DeleteFunc(slices.Clone(breakers), func(b queue.BreakerEntry) bool { return stale[b.Worker] })
	return ws, breakers
}

func boolOrder(x, y bool) int {
	switch {
	case x == y:
		return 0
	case x:
		return -1
	}
	return 1
}

// hostRows lists each (host, worker) the board or the breakers bucket
// knows, by host then worker.
func hostRows(ws []fleetrate.WorkerLimits, breakers []queue.BreakerEntry) ([]HostRow, []WorkerRow) {
	type key struct{ host, worker string }
	idx := map[key]int{}
	var rows []HostRow
	var workers []WorkerRow
	for _, w := range ws {
		workers = append(workers, WorkerRow{Worker: w.Worker, At: w.At, Hosts: len(w.Hosts)})
		for _, h := range w.Hosts {
			idx[key{h.Host, w.Worker}] = len(rows)
			rows = append(rows, HostRow{Host: h.Host, Worker: w.Worker, Limit: h.Limit, Adaptive: h.Adaptive,
				InFlight: h.InFlight, Waiting: h.Waiting, LatencyMS: float64(h.Latency.Microseconds()) / 1000,
				Rate: h.Rate, Admitted: h.Admitted, Refused: h.Refused, Breaker: string(job.BreakerClosed)})
		}
	}
	for _, b := range breakers {
		i, ok := idx[key{b.Host, b.Worker}]
		if !ok {
			i = len(rows)
			rows = append(rows, HostRow{Host: b.Host, Worker: b.Worker})
		}
		rows[i].Breaker, rows[i].Since = string(b.State), b.Since
	}
	slices.SortFunc(rows, func(x, y HostRow) int {
		return cmp.Or(strings.Compare(x.Host, y.Host), strings.Compare(x.Worker, y.Worker))
	})
	slices.SortFunc(workers, func(x, y WorkerRow) int { return strings.Compare(x.Worker, y.Worker) })
	return rows, workers
}

// reader reads what a snapshot shows.
type reader struct {
	src        source
	rateWindow time.Duration
	now        func() time.Time
}

// read gathers one snapshot. What cannot be read is a warning on it.
func (r *reader) read(ctx context.Context) Snapshot {
	o, err := r.src.Status(ctx, r.rateWindow)
	if err != nil {
		o.Warnings = append(o.Warnings, fmt.Sprintf("status: %v", err))
	}
	ws, err := r.src.Board(ctx)
	if err != nil {
		o.Warnings = append(o.Warnings, err.Error())
	}
	return build(o, ws, r.now())
}
