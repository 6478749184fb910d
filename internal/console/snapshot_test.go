package console

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/hostlimit"
	"github.com/jetpost/jetpost/pkg/job"
)

// A snapshot keeps status's numbers, adds the total and an ETA only for a
// running batch that moves, lists active batches first, and joins each
// worker's host limits with its breaker (a breaker on a host the board
// does not list still shows).
func TestBuildSnapshot(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	o := queue.Overview{
		Batches: []queue.BatchStatus{
			{Batch: "a-old", Results: 10, State: "done"},
			{Batch: "b-run", Open: 300, Results: 100, Rate: 50, State: "running", Active: true},
			{Batch: "c-paused", Open: 5, Results: 1, Rate: 2, State: "paused", Active: true},
		},
		Breakers: []queue.BreakerEntry{
			{Host: "api.example", Worker: "w1", State: job.BreakerOpen, Since: at},
			{Host: "gone.example", Worker: "w2", State: job.BreakerHalfOpen, Since: at},
		},
	}
	ws := []fleetrate.WorkerLimits{
		{Worker: "w2", At: at, Hosts: []hostlimit.HostState{{Host: "api.example", Limit: 4, InFlight: 2, Latency: 1500 * time.Microsecond, Adaptive: true}}},
		{Worker: "w1", At: at, Hosts: []hostlimit.HostState{{Host: "api.example", Limit: 8, Waiting: 3, Rate: "10/s"}}},
	}
	s := build(o, ws, at)
	var order []string
	for _, b := range s.Batches {
		order = append(order, b.Batch)
	}
	if fmt.Sprint(order) != "[b-run c-paused a-old]" {
		t.Errorf("order %v, want active first", order)
	}
	if b := s.Batches[0]; b.Total != 400 || b.ETASeconds == nil || *b.ETASeconds != 6 {
		t.Errorf("running batch: total %d, eta %v; want 400 and 6s", b.Total, b.ETASeconds)
	}
	if s.Batches[1].ETASeconds != nil {
		t.Error("a paused batch has an ETA")
	}
	want := []HostRow{
		{Host: "api.example", Worker: "w1", Limit: 8, Waiting: 3, Rate: "10/s", Breaker: "open", Since: at},
		{Host: "api.example", Worker: "w2", Limit: 4, InFlight: 2, Adaptive: true, LatencyMS: 1.5, Breaker: "closed"},
		{Host: "gone.example", Worker: "w2", Breaker: "half-open", Since: at},
	}
	if fmt.Sprint(s.Hosts) != fmt.Sprint(want) {
		t.Errorf("hosts\n%+v\nwant\n%+v", s.Hosts, want)
	}
	if len(s.Workers) != 2 || s.Workers[0].Worker != "w1" {
		t.Errorf("workers %+v", s.Workers)
	}

	many := queue.Overview{}
	for i := range maxBatches + 5 {
		many.Batches = append(many.Batches, queue.BatchStatus{Batch: fmt.Sprintf("b%04d", i), Active: i == maxBatches+4})
	}
	s = build(many, nil, at)
	if len(s.Batches) != maxBatches || s.MoreBatches != 5 || s.Batches[0].Batch != fmt.Sprintf("b%04d", maxBatches+4) {
		t.Errorf("%d batches, %d more, first %s", len(s.Batches), s.MoreBatches, s.Batches[0].Batch)
	}
}

// A worker that has not posted within fleetrate.BoardFresh is gone: it
// and its breakers leave the page at once (its board entry lingers until
// it expires). A breaker of a worker not on the board still shows.
func TestBuildSnapshotDropsStaleWorkers(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ws := []fleetrate.WorkerLimits{
		{Worker: "live", At: now.Add(-time.Second), Hosts: []hostlimit.HostState{{Host: "api.example", Limit: 4}}},
		{Worker: "dead", At: now.Add(-fleetrate.BoardFresh), Hosts: []hostlimit.HostState{{Host: "api.example", Limit: 8}}},
	}
	o := queue.Overview{Breakers: []queue.BreakerEntry{
		{Host: "api.example", Worker: "dead", State: job.BreakerOpen, Since: now},
		{Host: "other.example", Worker: "unposted", State: job.BreakerOpen, Since: now},
	}}
	s := build(o, ws, now)
	var rows []string
	for _, h := range s.Hosts {
		rows = append(rows, h.Host+"/"+h.Worker+"/"+h.Breaker)
	}
	if fmt.Sprint(rows) != "[api.example/live/closed other.example/unposted/open]" {
		t.Errorf("host rows %v, want the live worker's and the unposted breaker", rows)
	}
	if len(s.Workers) != 1 || s.Workers[0].Worker != "live" {
		t.Errorf("workers %+v, want live only", s.Workers)
	}
	if len(ws) != 2 || len(o.Breakers) != 2 {
		t.Error("build changed its input")
	}
}
