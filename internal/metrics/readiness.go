package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetpost/jetpost/internal/queue"
)

// Readiness is what the autoscaling gauges read at scrape time.
type Readiness struct {
	// Lanes reads each batch's readiness (queue.Consumer.Readiness).
	Lanes func(ctx context.Context) []queue.LaneReadiness
	// Queued counts requests admitted by their host's limits and waiting
	// for one of the worker's request places; Sending, requests in flight.
	Queued, Sending func() int
}

// readinessCollector exports the autoscaling signal. The undelivered
// figures are the stream's, the same on every worker (aggregate them with
// max); the held and in-flight ones are this worker's (aggregate with sum).
type readinessCollector struct {
	r      Readiness
	labels *batchLabels

	undelivered, held, sending *prometheus.Desc
	batchPending, batchReady   *prometheus.Desc
	batchRefused               *prometheus.Desc
}

func (rc *readinessCollector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{rc.undelivered, rc.held, rc.sending, rc.batchPending, rc.batchReady, rc.batchRefused}
}

func (rc *readinessCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range rc.descs() {
		ch <- d
	}
}

func (rc *readinessCollector) Collect(ch chan<- prometheus.Metric) {
	var undelivered, held float64
	pending, ready := map[string]float64{}, map[string]float64{}
	for _, l := range rc.r.Lanes(context.Background()) {
		undelivered += l.ReadyUndelivered()
		held += l.ReadyHeld()
		lbl := rc.labels.label(l.Batch)
		pending[lbl] += float64(l.Undelivered)
		ready[lbl] += l.ReadyUndelivered()
		if lbl != OtherBatches {
			ch <- prometheus.MustNewConstMetric(rc.batchRefused, prometheus.GaugeValue, l.RefusedShare, lbl)
		}
	}
	for lbl, v := range pending {
		ch <- prometheus.MustNewConstMetric(rc.batchPending, prometheus.GaugeValue, v, lbl)
		ch <- prometheus.MustNewConstMetric(rc.batchReady, prometheus.GaugeValue, ready[lbl], lbl)
	}
	ch <- prometheus.MustNewConstMetric(rc.undelivered, prometheus.GaugeValue, undelivered)
	ch <- prometheus.MustNewConstMetric(rc.held, prometheus.GaugeValue, held+float64(rc.r.Queued()))
	ch <- prometheus.MustNewConstMetric(rc.sending, prometheus.GaugeValue, float64(rc.r.Sending()))
}

// WatchReadiness exports the autoscaling signal: jobs ready to send now,
// not waiting out a retry, an open breaker or a host or rate limit, and not
// of a paused or cancelled batch (README "Autoscaling").
func (m *Metrics) WatchReadiness(r Readiness) {
	m.Register(&readinessCollector{
		r: r, labels: m.batchLabels,
		undelivered: prometheus.NewDesc("jetpost_ready_undelivered",
			"Jobs of running batches not delivered to any worker yet, less the estimated share whose host refuses (breaker open, host or rate limit): the stream's figure, the same on every worker; aggregate with max, not sum.", nil, nil),
		held: prometheus.NewDesc("jetpost_ready_held",
			"Jobs in this worker's hands ready to send, waiting only for a request place (fetched and not started, less the share whose host refuses; admitted by their host and queued for a place), and those it deferred for want of its own room until due; aggregate with sum.", nil, nil),
		sending: prometheus.NewDesc("jetpost_requests_in_flight",
			"Requests this worker has in flight (taking one of its JETPOST_MAX_INFLIGHT places); aggregate with sum.", nil, nil),
		batchPending: prometheus.NewDesc("jetpost_batch_undelivered",
			"Jobs of the running batch its consumer has not delivered yet (num_pending; 0 when paused or cancelled): the stream's figure; aggregate with max.", []string{"batch"}, nil),
		batchReady: prometheus.NewDesc("jetpost_batch_ready",
			"The batch's undelivered jobs less the estimated share whose host refuses: the stream's figure; aggregate with max.", []string{"batch"}, nil),
		batchRefused: prometheus.NewDesc("jetpost_batch_refused_ratio",
			"Share of this worker's recent decisions on the batch's jobs that deferred them because their host refused (breaker open, host or rate limit).", []string{"batch"}, nil),
	})
}

// WatchHealth exports whether the worker is ready (what /readyz answers)
// and how often settling failed.
func (m *Metrics) WatchHealth(ready func() bool, resultFailures, settleFailures func() uint64) {
	m.Register(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "jetpost_worker_ready", Help: "1 when the worker is connected and consuming (/readyz answers 200), else 0.",
		}, func() float64 {
			if ready() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "jetpost_result_store_failures_total", Help: "Results (or a re-driven callback's dead letter) that could not be stored; the job is redelivered after its ack wait.",
		}, func() float64 { return float64(resultFailures()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "jetpost_settle_failures_total", Help: "Acks and NAKs the server did not confirm; the job is redelivered after its ack wait.",
		}, func() float64 { return float64(settleFailures()) }),
	)
}
