package metrics_test

import (
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
		"jetpost_breaker_state host=a.example.com:443": 2,
		"jetpost_breaker_state host=b.example.com:443": 1,
		"jetpost_dead_letters_total":                   1,
	} {
		if got[key] != v {
			t.Errorf("%s = %v, want %v", key, got[key], v)
		}
	}
}
