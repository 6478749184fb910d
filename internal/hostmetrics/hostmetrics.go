// Package hostmetrics exports a worker's per-host limits (pkg/hostlimit) in
// Prometheus format, read at scrape time so the request path pays nothing.
package hostmetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetpost/jetpost/pkg/hostlimit"
)

// MaxHosts bounds the host label's cardinality (hosts come from untrusted
// files); the busiest hosts are reported.
const MaxHosts = 100

var (
	limitDesc = prometheus.NewDesc("jetpost_host_concurrency_limit",
		"Requests this worker may have in flight to the host now (adaptive or fixed).", []string{"host"}, nil)
	inflightDesc = prometheus.NewDesc("jetpost_host_in_flight",
		"Requests in flight to the host from this worker.", []string{"host"}, nil)
	waitingDesc = prometheus.NewDesc("jetpost_host_waiting",
		"Requests waiting briefly in this worker for a slot to the host.", []string{"host"}, nil)
	admittedDesc = prometheus.NewDesc("jetpost_host_admitted_total",
		"Requests admitted by the host's limits.", []string{"host"}, nil)
	refusedDesc = prometheus.NewDesc("jetpost_host_refused_total",
		"Jobs deferred by the host's concurrency or rate limit (no attempt spent).", []string{"host"}, nil)
	latencyDesc = prometheus.NewDesc("jetpost_host_latency_seconds",
		"Recent latency of the host's answers, as the adaptive limit sees it.", []string{"host"}, nil)
)

// Collector is a prometheus.Collector over a limiter's snapshot.
type Collector struct {
	snapshot func() []hostlimit.HostState
}

// New returns a collector reading snapshot (e.g. (*hostlimit.Limiter).Snapshot).
func New(snapshot func() []hostlimit.HostState) *Collector {
	return &Collector{snapshot: snapshot}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{limitDesc, inflightDesc, waitingDesc, admittedDesc, refusedDesc, latencyDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	hosts := hostlimit.Busiest(c.snapshot(), MaxHosts)
	for _, h := range hosts {
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(h.Limit), h.Host)
		ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(h.InFlight), h.Host)
		ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(h.Waiting), h.Host)
		ch <- prometheus.MustNewConstMetric(admittedDesc, prometheus.CounterValue, float64(h.Admitted), h.Host)
		ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(h.Refused), h.Host)
		ch <- prometheus.MustNewConstMetric(latencyDesc, prometheus.GaugeValue, h.Latency.Seconds(), h.Host)
	}
}
