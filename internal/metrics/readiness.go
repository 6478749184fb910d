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
// counts are the stream's, the same on every worker (aggregate them with
// max); the held and in-flight ones and the decision windows are this
// worker's (aggregate with sum). Each worker's refused share differs (and
// one without decisions has none), so the fleet's ready backlog is taken
// from the summed windows in PromQL (jetpost:ready_undelivered,
// deploy/prometheus/alerts.yml), not from any one worker's estimate.
type readinessCollector struct {
	r      Readiness
	labels *batchLabels

	held, sending              *prometheus.Desc
	batchPending               *prometheus.Desc
	batchDecided, batchRefused *prometheus.Desc
}

func (rc *readinessCollector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{rc.held, rc.sending, rc.batchPending, rc.batchDecided, rc.batchRefused}
}

func (rc *readinessCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range rc.descs() {
		ch <- d
	}
}

func (rc *readinessCollector) Collect(ch chan<- prometheus.Metric) {
	var held float64
	pending, win := map[string]float64{}, map[string]queue.Window{}
	for _, l := range rc.r.Lanes(context.Background()) {
		held += l.ReadyHeld()
		lbl := rc.labels.label(l.Batch)
		pending[lbl] += float64(l.Undelivered)
		w := win[lbl]
		w.Refused += l.Window.Refused
		w.Decided += l.Window.Decided
		win[lbl] = w
	}
	for lbl, v := range pending {
		ch <- prometheus.MustNewConstMetric(rc.batchPending, prometheus.GaugeValue, v, lbl)
		ch <- prometheus.MustNewConstMetric(rc.batchDecided, prometheus.GaugeValue, float64(win[lbl].Decided), lbl)
		ch <- prometheus.MustNewConstMetric(rc.batchRefused, prometheus.GaugeValue, float64(win[lbl].Refused), lbl)
	}
	ch <- prometheus.MustNewConstMetric(rc.held, prometheus.GaugeValue, held+float64(rc.r.Queued()))
	ch <- prometheus.MustNewConstMetric(rc.sending, prometheus.GaugeValue, float64(rc.r.Sending()))
}

// WatchReadiness exports the autoscaling signal: jobs ready to send now,
// not waiting out a retry, an open breaker or a host or rate limit, and not
// of a paused or cancelled batch (README "Autoscaling").
func (m *Metrics) WatchReadiness(r Readiness) {
	m.Register(&readinessCollector{
		r: r, labels: m.batchLabels,
		held: prometheus.NewDesc("jetpost_ready_held",
			"Jobs in this worker's hands ready to send, waiting only for a request place (fetched and not started, less the share whose host refuses; admitted by their host and queued for a place), and those it deferred for want of its own room until due; aggregate with sum.", nil, nil),
		sending: prometheus.NewDesc("jetpost_requests_in_flight",
			"Requests this worker has in flight (taking one of its JETPOST_MAX_INFLIGHT places); aggregate with sum.", nil, nil),
		batchPending: prometheus.NewDesc("jetpost_batch_undelivered",
			"Jobs of the running batch its consumer has not delivered yet (num_pending; 0 when paused or cancelled): the stream's figure; aggregate with max.", []string{"batch"}, nil),
		batchDecided: prometheus.NewDesc("jetpost_batch_decided",
			"This worker's recent decisions on first deliveries of the batch's jobs (its last window of 20 or more); aggregate with sum.", []string{"batch"}, nil),
		batchRefused: prometheus.NewDesc("jetpost_batch_refused",
			"Of jetpost_batch_decided, the jobs deferred because their host refused (breaker open, host or rate limit); aggregate with sum: sum(refused)/sum(decided) is the fleet's refused share.", []string{"batch"}, nil),
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
