package daemon_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/metrics"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/worker/daemon"
	"github.com/jetpost/jetpost/pkg/job"
)

// holdingTarget answers nothing until the test ends: every request it
// gets stays in flight.
type holdingTarget struct {
	*httptest.Server
	inflight atomic.Int64
	release  chan struct{}
	once     sync.Once
}

// releaseAll lets every request held, and those to come, end: a worker
// stopping waits for its requests in flight.
func (h *holdingTarget) releaseAll() { h.once.Do(func() { close(h.release) }) }

func newHoldingTarget(t *testing.T) *holdingTarget {
	h := &holdingTarget{release: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.inflight.Add(1)
		defer h.inflight.Add(-1)
		select {
		case <-h.release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { h.releaseAll(); h.Close() })
	return h
}

// runBuilt runs a worker built by daemon.Build, configured by env, until
// the test ends, and returns its metrics.
func runBuilt(t *testing.T, url string, env map[string]string) *metrics.Metrics {
	t.Helper()
	t.Setenv("JETPOST_NATS_URL", url)
	t.Setenv("JETPOST_ALLOWED_NETWORKS", "127.0.0.0/8")
	t.Setenv("JETPOST_WORKER_ID", "w1")
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := config.LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mx *metrics.Metrics
	svc, err := daemon.Build(context.Background(), cfg, nc, daemon.Options{Log: zerolog.Nop(), Metrics: func(m *metrics.Metrics) { mx = m }})
	if err != nil {
		t.Fatal(err)
	}
	runService(t, svc)
	return mx
}

// saturatedWorker starts a server, a target that holds every request, and
// a worker with two request places; it returns the worker's metrics, a
// connection to the server and the target.
func saturatedWorker(t *testing.T) (*metrics.Metrics, *nats.Conn, *holdingTarget) {
	ns := natstest.RunServer(t)
	tgt := newHoldingTarget(t)
	mx := runBuilt(t, ns.ClientURL(), map[string]string{"JETPOST_MAX_INFLIGHT": "2"})
	t.Cleanup(tgt.releaseAll) // first: the worker waits for its requests when it stops
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return mx, nc, tgt
}

// scrape is one reading of a worker's metrics, as one Prometheus scrape
// takes it: each metric's samples summed per batch label ("" without
// one). Figures that go together must come from one reading: a reading
// may start a new window of decisions (queue's readiness), so the refused
// count of one and the decided count of the next need not match.
type scrape map[string]map[string]float64

func scrapeOf(t *testing.T, mx *metrics.Metrics) scrape {
	t.Helper()
	families, err := mx.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := scrape{}
	for _, f := range families {
		byBatch := map[string]float64{}
		for _, m := range f.GetMetric() {
			batch := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "batch" {
					batch = l.GetValue()
				}
			}
			byBatch[batch] += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		s[f.GetName()] = byBatch
	}
	return s
}

// value sums a metric's samples, those of one batch if batch is set.
func (s scrape) value(name, batch string) float64 {
	if batch != "" {
		return s[name][batch]
	}
	sum := 0.0
	for _, v := range s[name] {
		sum += v
	}
	return sum
}

// refusedShare is the batch's refused share as the recording rule takes
// it: refused over decided (0 without decisions).
func (s scrape) refusedShare(batch string) float64 {
	decided := s.value("jetpost_batch_decided", batch)
	if decided == 0 {
		return 0
	}
	return s.value("jetpost_batch_refused", batch) / decided
}

// ready is the autoscaling signal of one worker, as
// deploy/prometheus/alerts.yml computes it: each batch's undelivered jobs
// less its refused share, plus the jobs the worker holds ready.
func (s scrape) ready() float64 {
	sum := s.value("jetpost_ready_held", "")
	for b, undelivered := range s["jetpost_batch_undelivered"] {
		sum += undelivered * (1 - s.refusedShare(b))
	}
	return sum
}

// metricValue is value in a reading of its own.
func metricValue(t *testing.T, mx *metrics.Metrics, name, batch string) float64 {
	t.Helper()
	return scrapeOf(t, mx).value(name, batch)
}

// refusedShare is scrape.refusedShare in a reading of its own.
func refusedShare(t *testing.T, mx *metrics.Metrics, batch string) float64 {
	t.Helper()
	return scrapeOf(t, mx).refusedShare(batch)
}

// ready is scrape.ready in a reading of its own.
func ready(t *testing.T, mx *metrics.Metrics) float64 {
	t.Helper()
	return scrapeOf(t, mx).ready()
}

func publishJobs(t *testing.T, nc *nats.Conn, batch, url string, n int) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	pub := queue.NewPublisher(js, queue.NewNames("jetpost"), 64, nil)
	now := time.Now().UTC()
	for i := range n {
		j := &job.Job{ID: fmt.Sprintf("%s-%d", batch, i), Batch: batch, Method: "GET", URL: url + "/" + strconv.Itoa(i), EnqueuedAt: now}
		if err := pub.Publish(context.Background(), j); err != nil {
			t.Fatal(err)
		}
	}
	if st := pub.Close(); st.Published != n {
		t.Fatalf("published %+v, want %d", st, n)
	}
}

// consumerCounts reads the batch consumer's own counts: what a scaler
// reading the consumer would see.
func consumerCounts(t *testing.T, nc *nats.Conn, batch string) (pending, ackPending uint64, ok bool) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	names := queue.NewNames("jetpost")
	cons, err := js.Consumer(context.Background(), names.JobsStream(), names.BatchConsumer(names.JobSubject(batch)))
	if err != nil {
		return 0, 0, false
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		return 0, 0, false
	}
	return info.NumPending, uint64(info.NumAckPending), true
}

// A worker whose request places are all taken by a host with room to
// spare (it answers nothing yet, but refuses nothing) shows the batch's
// backlog: the jobs it could send with more workers. It never counts the
// requests in flight.
func TestReadinessShowsTheBacklogOfASaturatedWorker(t *testing.T) {
	mx, nc, tgt := saturatedWorker(t)
	const n = 100
	publishJobs(t, nc, "busy", tgt.URL, n)
	waitFor(t, func() bool { return tgt.inflight.Load() == 2 })
	var most float64
	waitFor(t, func() bool {
		r := ready(t, mx)
		if r > n-2 {
			t.Fatalf("ready %v: counts the 2 requests in flight among %d jobs", r, n)
		}
		most = max(most, r)
		// In flight 2, waiting for the host's admission at most 2, and
		// what came due in JetStream and was not fetched again yet.
		return r >= n-8
	})
	if got := metricValue(t, mx, "jetpost_requests_in_flight", ""); got != 2 {
		t.Errorf("jetpost_requests_in_flight %v, want 2", got)
	}
	if got := refusedShare(t, mx, "busy"); got != 0 {
		t.Errorf("refused share %v: the host refused nothing, this worker had no room", got)
	}
	t.Logf("ready %v of %d jobs, 2 in flight", most, n)
}

// Jobs whose host refuses (its breaker open, its rate limit spent) wait in
// JetStream or in the worker, and are not ready: more workers would not
// send them sooner. A scaler reading the consumer sees every one of them.
//
// A first batch shuts the host (opens its breaker, spends its rate) before
// the batch under test comes, so that every decision on the latter is a
// refusal. Were the two one batch, how many of its jobs were sent or
// deferred for the worker's own room before the breaker opened would
// depend on the machine's load, and so would its refused share.
func TestReadinessLeavesOutJobsTheirHostRefuses(t *testing.T) {
	type shutting struct {
		env map[string]string
		// shut reports whether the host refuses now, as the worker says.
		shut func(s scrape, requests int64) bool
	}
	for name, c := range map[string]shutting{
		"breaker open": {
			env: map[string]string{"JETPOST_BREAKER_FAILURES": "2", "JETPOST_BREAKER_OPEN_TIMEOUT": "1h",
				"JETPOST_MAX_ATTEMPTS": "100", "JETPOST_BACKOFF_BASE": "10ms", "JETPOST_BACKOFF_MAX": "1s"},
			shut: func(s scrape, _ int64) bool {
				return s.value("jetpost_breaker_state", "") == 2
			},
		},
		"rate limit": {
			env: map[string]string{"JETPOST_RATE_LIMITS": "127.0.0.1=1/h"},
			shut: func(s scrape, requests int64) bool {
				return requests == 1 && s.value("jetpost_batch_refused", "opener") > 0
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			ns := natstest.RunServer(t)
			var requests atomic.Int64
			tgt := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if name == "breaker open" {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
			}))
			defer tgt.Close()
			c.env["JETPOST_MAX_INFLIGHT"] = "4"
			mx := runBuilt(t, ns.ClientURL(), c.env)
			nc, err := nats.Connect(ns.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			publishJobs(t, nc, "opener", tgt.URL, 4)
			// Shut, and no request left that it let through before.
			waitFor(t, func() bool {
				s := scrapeOf(t, mx)
				return c.shut(s, requests.Load()) && s.value("jetpost_requests_in_flight", "") == 0
			})
			sent := requests.Load()
			const n = 60
			publishJobs(t, nc, "refused", tgt.URL, n)
			var seen scrape
			waitFor(t, func() bool {
				seen = scrapeOf(t, mx)
				return seen.value("jetpost_batch_decided", "refused") > 0 && seen.ready() < 0.5
			})
			if share := seen.refusedShare("refused"); share != 1 {
				t.Errorf("refused share %v, want 1: the host refused every job of the batch", share)
			}
			if got := requests.Load(); got != sent {
				t.Errorf("the target got %d requests after it was shut, want none", got-sent)
			}
			open := n - storedResults(t, nc, "refused")
			pending, ackPending, _ := consumerCounts(t, nc, "refused")
			if open != n || pending+ackPending < open {
				t.Errorf("%d jobs open, consumer pending %d + ack pending %d: want the batch waiting", open, pending, ackPending)
			}
			t.Logf("ready %.2f while %d jobs are open (consumer: %d pending, %d ack pending)", ready(t, mx), open, pending, ackPending)
		})
	}
}

// A paused batch's jobs are not ready, however many its consumer holds;
// once resumed, its backlog shows.
func TestReadinessOfAPausedBatchIsZero(t *testing.T) {
	mx, nc, tgt := saturatedWorker(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := queue.NewControl(context.Background(), js, queue.NewNames("jetpost"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Pause(context.Background(), "held"); err != nil {
		t.Fatal(err)
	}
	const n = 50
	publishJobs(t, nc, "held", tgt.URL, n)
	// The worker has the batch's lane, paused, and its consumer holds
	// every job.
	waitFor(t, func() bool {
		pending, _, ok := consumerCounts(t, nc, "held")
		return ok && pending == n && metricValue(t, mx, "jetpost_batch_state", "held") == 1
	})
	s := scrapeOf(t, mx)
	if r, u := s.ready(), s.value("jetpost_batch_undelivered", "held"); r != 0 || u != 0 {
		t.Errorf("paused batch: ready %v, undelivered %v, want 0 (its consumer holds %d)", r, u, n)
	}
	if _, err := ctl.Resume(context.Background(), "held"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ready(t, mx) >= n-8 })
}
