package enqueue

import (
	"strings"
	"testing"

	"github.com/jetpost/jetpost/pkg/job"
)

// A failed callback is counted without changing its job's outcome, and a
// job that sent nothing adds no latency sample.
func TestSummaryCountsFailedCallbacksAndOnlySentLatencies(t *testing.T) {
	s := newSummary()
	s.Add(&job.Result{ID: "a", OK: true, Attempts: 1, DurationMS: 40, Callback: &job.CallbackResult{OK: false}}, false)
	s.Add(&job.Result{ID: "b", OK: true, Attempts: 1, DurationMS: 60, Callback: &job.CallbackResult{OK: true}}, false)
	s.Add(&job.Result{ID: "c", Reason: job.ReasonBreakerOpen, Attempts: 0}, false)
	s.Finish(0)
	if s.OK != 2 || s.Failed != 1 || s.CallbacksFailed != 1 {
		t.Fatalf("ok %d failed %d callbacks failed %d; want 2, 1, 1", s.OK, s.Failed, s.CallbacksFailed)
	}
	if s.P50MS != 40 || s.P99MS != 60 {
		t.Errorf("p50 %d p99 %d; want 40 and 60 (the turned-away job has no latency)", s.P50MS, s.P99MS)
	}
	if got := s.String(); !strings.Contains(got, "1 callbacks failed") {
		t.Errorf("summary %q does not mention the failed callback", got)
	}
}

// Cancelled results are counted apart: neither ok nor failed, and named
// in the summary line.
func TestSummaryCountsCancelledApart(t *testing.T) {
	s := newSummary()
	s.Add(&job.Result{ID: "a", OK: true, Attempts: 1}, false)
	s.Add(&job.Result{ID: "b", Reason: job.ReasonCancelled}, false)
	s.Add(&job.Result{ID: "c", Reason: job.ReasonCancelled}, false)
	s.Add(&job.Result{ID: "d", Reason: job.ReasonExhausted, Attempts: 3}, false)
	s.Finish(0)
	if s.OK != 1 || s.Failed != 1 || s.Cancelled != 2 || s.ByReason[string(job.ReasonCancelled)] != 0 {
		t.Fatalf("ok %d failed %d cancelled %d by reason %v; want 1, 1, 2 and no cancelled reason among failures", s.OK, s.Failed, s.Cancelled, s.ByReason)
	}
	if got := s.String(); !strings.Contains(got, "4 results: 1 ok, 1 failed (exhausted 1), 2 cancelled") {
		t.Errorf("summary %q", got)
	}
}
