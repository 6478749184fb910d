// Package metrics exposes a worker's activity in Prometheus format. It owns
// its registry (no global state) and plugs into the worker through the
// worker.Observer hooks, so the worker does not depend on Prometheus.
// Figures read at scrape time come from the queue and the sender
// (WatchBatches, WatchReadiness: the autoscaling signal, WatchHealth).
// Descs lists every registered metric: deploy's test checks the dashboard
// and alert rules against it.
package metrics

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

// MaxHostLabels bounds the host label's cardinality: hosts come from
// untrusted files, and a label per host would let one file blow up the
// time series count. Hosts beyond it are reported as "other".
const MaxHostLabels = 100

// Metrics is a worker's set of metrics.
type Metrics struct {
	reg *prometheus.Registry

	jobs       *prometheus.CounterVec
	attempts   *prometheus.CounterVec
	latency    prometheus.Histogram
	inflight   prometheus.Gauge
	deferred   *prometheus.CounterVec
	breaker    *prometheus.GaugeVec
	deadLetter prometheus.Counter

	mu    sync.Mutex
	hosts map[string]struct{}

	batchLabels *batchLabels
	batchSent   *prometheus.CounterVec

	// registered lists every collector, so Descs can name every metric.
	registered []prometheus.Collector
}

// New registers every metric. reconnects, if set, is read at scrape time
// for jetpost_nats_reconnects_total.
func New(reconnects func() uint64) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), hosts: map[string]struct{}{}, batchLabels: &batchLabels{own: map[string]bool{}}}
	m.batchSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jetpost_batch_sent_total", Help: "Requests sent to jobs' targets, by batch (at most 20 batch values while active, the rest _other).",
	}, []string{"batch"})
	m.jobs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jetpost_jobs_total", Help: "Jobs finished, by outcome (ok or the failure reason).",
	}, []string{"outcome"})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jetpost_http_attempts_total", Help: "HTTP attempts, by status class (2xx … 5xx, or error when no response).",
	}, []string{"class"})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "jetpost_request_duration_seconds", Help: "Duration of HTTP attempts.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14), // 5ms .. ~41s
	})
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "jetpost_jobs_in_flight", Help: "Jobs being handled by this worker now.",
	})
	m.deferred = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jetpost_jobs_deferred_total", Help: "Jobs handed back to JetStream with a delay: retry (attempt spent) or defer (breaker open, attempt not spent).",
	}, []string{"kind"})
	m.breaker = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jetpost_breaker_state", Help: "Circuit breaker state per host: 0 closed, 1 half-open, 2 open.",
	}, []string{"host"})
	m.deadLetter = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jetpost_dead_letters_total", Help: "Jobs that finally failed, and jobs whose callback finally failed, copied to the dead-letter stream (a re-driven callback failing again is not counted).",
	})
	m.Register(m.batchSent, m.jobs, m.attempts, m.latency, m.inflight, m.deferred, m.breaker, m.deadLetter,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if reconnects != nil {
		m.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "jetpost_nats_reconnects_total", Help: "Reconnections to NATS since the worker started.",
		}, func() float64 { return float64(reconnects()) }))
	}
	return m
}

// WatchQueued exports queued, read at scrape time, as
// jetpost_requests_queued: requests admitted for their host but waiting for
// one of the worker's JETPOST_MAX_INFLIGHT places. Above zero the worker
// sends as much as it may; more would take more workers or a higher bound.
func (m *Metrics) WatchQueued(queued func() int) {
	m.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "jetpost_requests_queued",
		Help: "Requests admitted for their host but waiting for one of the worker's JETPOST_MAX_INFLIGHT places.",
	}, func() float64 { return float64(queued()) }))
}

// Handler serves the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is exposed for tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Observer returns the hooks to give worker.New.
func (m *Metrics) Observer() worker.Observer {
	return worker.Observer{
		Attempt: func(_ string, o *sender.Outcome) {
			if !o.Attempted {
				return
			}
			m.attempts.WithLabelValues(statusClass(o.Status)).Inc()
			m.latency.Observe(o.Duration.Seconds())
		},
		Finished: func(r *job.Result) {
			outcome := "ok"
			if !r.OK {
				outcome = string(r.Reason)
			}
			if queue.LeavesDeadLetter(r) {
				m.deadLetter.Inc()
			}
			m.jobs.WithLabelValues(outcome).Inc()
		},
		Deferred: func(_ string, a queue.Action) {
			m.deferred.WithLabelValues(a.String()).Inc()
		},
		InFlight: func(delta int) { m.inflight.Add(float64(delta)) },
		Sent:     func(batch string) { m.batchSent.WithLabelValues(m.batchLabels.label(batch)).Inc() },
	}
}

// BreakerChanged records a breaker transition (sender.Config.OnBreakerChange).
func (m *Metrics) BreakerChanged(host string, _, to job.BreakerState) {
	v := 0.0
	switch to {
	case job.BreakerHalfOpen:
		v = 1
	case job.BreakerOpen:
		v = 2
	}
	m.breaker.WithLabelValues(m.hostLabel(host)).Set(v)
}

func (m *Metrics) hostLabel(host string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.hosts[host]; ok {
		return host
	}
	if len(m.hosts) >= MaxHostLabels {
		return "other"
	}
	m.hosts[host] = struct{}{}
	return host
}

func statusClass(status int) string {
	if status <= 0 {
		return "error"
	}
	return strconv.Itoa(status/100) + "xx"
}
