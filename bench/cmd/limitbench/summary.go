package main

import (
	"encoding/json"
	"io"
)

// summary is one capacity case as -json prints it: one JSON object per
// line, for programs rather than people (make bench parses the Markdown
// table, which older limitbench builds print too).
type summary struct {
	Scenario   string `json:"scenario"`    // adaptive, fixed or oracle
	RetryAfter string `json:"retry_after"` // what the target's 429s carried: none, seconds or date
	Workers    int    `json:"workers"`
	Jobs       int    `json:"jobs"`
	// JobsPerSec is jobs ok ÷ (last 200 − first request at the target), of
	// the median run; Capacity is that over the target's 600 jobs/s.
	JobsPerSec float64 `json:"jobs_per_sec"`
	Capacity   float64 `json:"capacity_fraction"`
	Requests   int     `json:"requests"`
	Pct429     float64 `json:"pct_429"` // of the requests the target received
	OK         int     `json:"ok"`
	Failed     int     `json:"failed"`
	WallSec    float64 `json:"wall_s"` // publish to last result
	// Every run's figures, when -repeat ran more than one.
	RunsCapacity []float64 `json:"runs_capacity_fraction,omitempty"`
	RunsPct429   []float64 `json:"runs_pct_429,omitempty"`
	Load         string    `json:"load"` // load averages over 1, 5, 15 min at the case's end
}

// writeSummaries prints each capacity row's summary as a line of JSON.
func writeSummaries(w io.Writer, rows []row) error {
	enc := json.NewEncoder(w)
	for _, r := range rows {
		if r.sum == nil {
			continue
		}
		if err := enc.Encode(r.sum); err != nil {
			return err
		}
	}
	return nil
}
