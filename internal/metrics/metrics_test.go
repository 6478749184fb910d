package metrics_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jetpost/jetpost/internal/metrics"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// Label values are what dashboards and alerts match on: the Go names of
// actions, reasons and breaker states may change, these strings may not.
func TestLabelValuesAreStable(t *testing.T) {
	m := metrics.New(nil)
	obs := m.Observer()
	obs.Deferred("h", queue.NakAfterAttempt)
	obs.Deferred("h", queue.NakAfter)
	obs.Deferred("h", queue.NakAfter)
	obs.Finished(&job.Result{OK: true})
	obs.Finished(&job.Result{Reason: job.ReasonBreakerOpen})
	obs.Finished(&job.Result{Reason: job.ReasonCancelled}) // no dead letter: settle stores none
	m.BreakerChanged("a.example.com:443", job.BreakerClosed, job.BreakerOpen)
	m.BreakerChanged("b.example.com:443", job.BreakerOpen, job.BreakerHalfOpen)

	got := map[string]float64{}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range mt.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			got[key] = mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
		}
	}
	for key, v := range map[string]float64{
		"jetpost_jobs_deferred_total kind=retry":       1,
		"jetpost_jobs_deferred_total kind=defer":       2,
		"jetpost_jobs_total outcome=ok":                1,
		"jetpost_jobs_total outcome=breaker_open":      1,
		"jetpost_jobs_total outcome=cancelled":         1,
		"jetpost_breaker_state host=a.example.com:443": 2,
		"jetpost_breaker_state host=b.example.com:443": 1,
		"jetpost_dead_letters_total":                   1,
	} {
		if got[key] != v {
			t.Errorf("%s = %v, want %v", key, got[key], v)
		}
	}
}

// gathered is every sample by name and labels.
func gathered(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range mt.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			got[key] = mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
		}
	}
	return got
}

// Thirty active batches: twenty have labels of their own, the other ten
// are summed under _other; a batch gone frees its label.
func TestBatchLabelsAreBounded(t *testing.T) {
	m := metrics.New(nil)
	var lanes []queue.LaneStat
	for i := range 30 {
		lanes = append(lanes, queue.LaneStat{Batch: fmt.Sprintf("b%02d", i), Weight: 4, State: queue.BatchRunning, Share: 1.0 / 30, Running: 1})
	}
	lanes[0].State = queue.BatchPaused
	m.WatchBatches(func() []queue.LaneStat { return lanes })
	obs := m.Observer()
	for _, l := range lanes {
		obs.Sent(l.Batch)
	}
	got := gathered(t, m)
	own := 0
	for key := range got {
		if strings.HasPrefix(key, "jetpost_batch_running ") && !strings.HasSuffix(key, "=_other") {
			own++
		}
	}
	if own != metrics.MaxBatchLabels || got["jetpost_batch_running batch=_other"] != 10 || got["jetpost_batch_sent_total batch=_other"] != 10 {
		t.Errorf("%d own labels, _other running %v sent %v; want %d, 10, 10", own, got["jetpost_batch_running batch=_other"], got["jetpost_batch_sent_total batch=_other"], metrics.MaxBatchLabels)
	}
	if got["jetpost_batch_state batch=b00"] != 1 || got["jetpost_batch_sent_total batch=b00"] != 1 {
		t.Errorf("b00: state %v sent %v, want paused (1) and 1", got["jetpost_batch_state batch=b00"], got["jetpost_batch_sent_total batch=b00"])
	}
	lanes = lanes[1:] // b00 is done: its label goes to another batch
	gathered(t, m)    // this scrape frees it (its counter may be read meanwhile)
	got = gathered(t, m)
	if _, ok := got["jetpost_batch_sent_total batch=b00"]; ok || got["jetpost_batch_running batch=b20"] != 1 || got["jetpost_batch_running batch=_other"] != 9 {
		t.Errorf("after b00 left: b00 still counted, or b20 (%v) did not take its label (_other %v)", got["jetpost_batch_running batch=b20"], got["jetpost_batch_running batch=_other"])
	}
}
