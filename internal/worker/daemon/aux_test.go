package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/internal/worker/daemon"
	"github.com/jetpost/jetpost/pkg/job"
)

// logLines collects a worker's JSON log lines.
type logLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count counts the lines that hold every one of subs.
func (l *logLines) count(subs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		all := line != ""
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

// startWorker builds a worker from the JETPOST_* environment with id; nil
// (and the test failed) if it cannot. Safe from any goroutine.
func startWorker(t *testing.T, ctx context.Context, natsURL, id string, log *logLines) *worker.Service {
	t.Helper()
	cfg, err := config.LoadWorker()
	if err != nil {
		t.Error(err)
		return nil
	}
	cfg.WorkerID = id
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Error(err)
		return nil
	}
	t.Cleanup(nc.Close)
	svc, err := daemon.Build(ctx, cfg, nc, daemon.Options{
		Log:      zerolog.New(log),
		AuxPause: func(int) time.Duration { return 50 * time.Millisecond },
	})
	if err != nil {
		t.Errorf("worker %s: %v", id, err)
		return nil
	}
	return svc
}

// runService runs svc until the test ends.
func runService(t *testing.T, svc *worker.Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// A worker whose auxiliary buckets cannot be created (another stream holds
// their subjects) starts and consumes: jobs for hosts without a rate limit
// are sent, a rate-limited host's job waits (shared rate limits fail
// closed), one warning per bucket says so. Once the buckets can be created
// the worker makes them by itself: the rate-limited job is sent and the
// worker's limits are posted.
func TestWorkerDoesWithoutItsAuxiliaryBuckets(t *testing.T) {
	ns := natstest.RunServer(t)
	names := queue.NewNames("jetpost")
	var blocked atomic.Bool
	blocked.Store(true)
	var sentWhileBlocked atomic.Int32
	limited := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		if blocked.Load() {
			sentWhileBlocked.Add(1)
		}
	}))
	defer limited.Close()
	free := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer free.Close()
	lu, _ := url.Parse(limited.URL)
	for k, v := range map[string]string{
		"JETPOST_NATS_URL": ns.ClientURL(), "JETPOST_ALLOWED_NETWORKS": "127.0.0.0/8",
		"JETPOST_MAX_INFLIGHT": "4", "JETPOST_RATE_LIMITS": lu.Host + "=100/s",
	} {
		t.Setenv(k, v)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var subjects []string
	for _, b := range []string{names.BreakersBucket(), names.RatesBucket(), names.HostLimitsBucket()} {
		subjects = append(subjects, "$KV."+b+".>")
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BLOCKER", Subjects: subjects}); err != nil {
		t.Fatal(err)
	}
	var log logLines
	svc := startWorker(t, ctx, ns.ClientURL(), "w1", &log)
	if svc == nil {
		t.FailNow()
	}
	runService(t, svc)

	publish(t, nc, &job.Job{ID: "limited", Batch: "b", Method: "GET", URL: limited.URL + "/x", EnqueuedAt: time.Now().UTC()})
	publish(t, nc, &job.Job{ID: "free", Batch: "b", Method: "GET", URL: free.URL + "/x", EnqueuedAt: time.Now().UTC()})
	waitFor(t, func() bool { return storedResults(t, nc, "b") >= 1 })
	waitFor(t, func() bool { return log.count("auxiliary bucket unavailable") >= 6 }) // each retried at least once

	blocked.Store(false)
	if err := js.DeleteStream(ctx, "BLOCKER"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return storedResults(t, nc, "b") == 2 })
	if n := sentWhileBlocked.Load(); n != 0 {
		t.Errorf("%d requests to the rate-limited host while the rate bucket was missing, want 0", n)
	}
	waitFor(t, func() bool {
		board, err := fleetrate.OpenBoardReadOnly(ctx, js, names.Prefix)
		if err != nil {
			return false
		}
		ws, err := board.List(ctx)
		return err == nil && len(ws) == 1 && ws[0].Worker == "w1"
	})
	waitFor(t, func() bool { return log.count("auxiliary bucket available again") == 3 })
	if w := log.count(`"level":"warn"`, "auxiliary bucket unavailable"); w != 3 {
		t.Errorf("%d warnings about missing buckets, want one per bucket (3):\n%s", w, log.b.String())
	}
}

// The reproduction: the breakers bucket has one replica, on a node
// that is down. Workers started together then must all come up and process
// every job, each saying once that the bucket is missing; when the node is
// back, they set the bucket up with JETPOST_REPLICAS replicas by themselves.
func TestWorkersComeUpWhileTheBreakerBucketIsOffline(t *testing.T) {
	c := natstest.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute) // liveness guard
	defer cancel()
	names := queue.NewNames("jetpost")
	tgt := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer tgt.Close()
	for k, v := range map[string]string{
		"JETPOST_NATS_URL": c.URL(), "JETPOST_ALLOWED_NETWORKS": "127.0.0.0/8",
		"JETPOST_MAX_INFLIGHT": "4", "JETPOST_REPLICAS": "3",
	} {
		t.Setenv(k, v)
	}
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// A fleet ran before (streams and attempts replicated) but the
	// breakers bucket was made with one replica, as before the fix.
	cfg := queue.StreamConfig{Replicas: 3, DedupWindow: 2 * time.Minute, ResultsMaxAge: 168 * time.Hour, AttemptsTTL: 25 * time.Hour}
	if err := queue.EnsureStores(ctx, js, names, cfg, queue.SetupOptions{Attempts: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.OpenBreakerBoard(ctx, js, names, 1); err != nil {
		t.Fatal(err)
	}
	bst, err := js.Stream(ctx, "KV_"+names.BreakersBucket())
	if err != nil {
		t.Fatal(err)
	}
	down := c.Index(bst.CachedInfo().Cluster.Leader)
	c.Stop(down)
	c.WaitMetaLeader()

	logs := make([]*logLines, 3)
	svcs := make([]*worker.Service, 3)
	var wg sync.WaitGroup
	for i := range svcs {
		logs[i] = &logLines{}
		wg.Add(1)
		go func() { defer wg.Done(); svcs[i] = startWorker(t, ctx, c.URL(), fmt.Sprintf("w%d", i+1), logs[i]) }()
	}
	wg.Wait()
	for _, svc := range svcs {
		if svc == nil {
			t.FailNow() // startWorker said why
		}
		runService(t, svc)
	}
	const jobs = 30
	for i := range jobs {
		publish(t, nc, &job.Job{ID: fmt.Sprint("j", i), Batch: "b", Method: "GET", URL: tgt.URL + "/x", EnqueuedAt: time.Now().UTC()})
	}
	waitFor(t, func() bool { return storedResults(t, nc, "b") == jobs })

	c.Start(down)
	t.Cleanup(func() {
		if t.Failed() {
			for i, l := range logs {
				t.Logf("worker %d's log:\n%s", i+1, l.b.String())
			}
		}
	})
	waitFor(t, func() bool {
		// Bounded: a request the restarted node takes in before it caught
		// up may go unanswered.
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := js.Stream(cctx, "KV_"+names.BreakersBucket())
		return err == nil && st.CachedInfo().Config.Replicas == 3
	})
	for i, l := range logs {
		bucket := `"bucket":"` + names.BreakersBucket() + `"`
		waitFor(t, func() bool { return l.count("auxiliary bucket available again", bucket) == 1 })
		if w := l.count(`"level":"warn"`, "auxiliary bucket unavailable", bucket); w != 1 {
			t.Errorf("worker %d: %d warnings about the breakers bucket, want 1", i+1, w)
		}
	}
}
