package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetpost/jetpost/internal/queue"
)

// MaxBatchLabels bounds the batch label's cardinality: batches are named
// by whoever enqueues, and a thousand may be active at once. The first
// MaxBatchLabels active batches get a label of their own, kept while they
// are active; the others are summed under OtherBatches.
const MaxBatchLabels = 20

// OtherBatches is the batch label of the batches beyond MaxBatchLabels.
const OtherBatches = "_other"

// batchLabels hands out the batch label values.
type batchLabels struct {
	mu  sync.Mutex
	own map[string]bool
}

func (b *batchLabels) label(batch string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.own[batch] {
		return batch
	}
	if len(b.own) >= MaxBatchLabels || batch == OtherBatches {
		return OtherBatches
	}
	b.own[batch] = true
	return batch
}

// keep frees the labels of batches no longer active, and returns them.
func (b *batchLabels) keep(active map[string]bool) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var gone []string
	for batch := range b.own {
		if !active[batch] {
			delete(b.own, batch)
			gone = append(gone, batch)
		}
	}
	return gone
}

// batchCollector reads the worker's lanes at scrape time.
type batchCollector struct {
	lanes   func() []queue.LaneStat
	labels  *batchLabels
	sent    *prometheus.CounterVec
	running *prometheus.Desc
	share   *prometheus.Desc
	state   *prometheus.Desc
}

func (bc *batchCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bc.running
	ch <- bc.share
	ch <- bc.state
}

func (bc *batchCollector) Collect(ch chan<- prometheus.Metric) {
	lanes := bc.lanes()
	active := make(map[string]bool, len(lanes))
	for _, l := range lanes {
		active[l.Batch] = true
	}
	for _, gone := range bc.labels.keep(active) {
		bc.sent.DeleteLabelValues(gone)
	}
	running, share := map[string]float64{}, map[string]float64{}
	for _, l := range lanes {
		lbl := bc.labels.label(l.Batch)
		running[lbl] += float64(l.Running)
		share[lbl] += l.Share
		if lbl != OtherBatches {
			ch <- prometheus.MustNewConstMetric(bc.state, prometheus.GaugeValue, stateValue(l.State), lbl)
		}
	}
	for lbl, v := range running {
		ch <- prometheus.MustNewConstMetric(bc.running, prometheus.GaugeValue, v, lbl)
		ch <- prometheus.MustNewConstMetric(bc.share, prometheus.GaugeValue, share[lbl], lbl)
	}
}

func stateValue(s queue.BatchState) float64 {
	switch s {
	case queue.BatchPaused:
		return 1
	case queue.BatchCancelled:
		return 2
	}
	return 0
}

// WatchBatches exports, per active batch (MaxBatchLabels at most, the rest
// as _other), read from lanes at scrape time: jobs in a request place, the
// share of this worker's places and the state.
func (m *Metrics) WatchBatches(lanes func() []queue.LaneStat) {
	m.Register(&batchCollector{
		lanes: lanes, labels: m.batchLabels, sent: m.batchSent,
		running: prometheus.NewDesc("jetpost_batch_running", "Jobs of the batch in one of this worker's request places.", []string{"batch"}, nil),
		share:   prometheus.NewDesc("jetpost_batch_share", "The batch's share of this worker's request places: its weight over the active batches' (0 when it has nothing ready or is not running).", []string{"batch"}, nil),
		state:   prometheus.NewDesc("jetpost_batch_state", "The batch's state: 0 running, 1 paused, 2 cancelled.", []string{"batch"}, nil),
	})
}
