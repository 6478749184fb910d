package daemon_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/worker/daemon"
	"github.com/jetpost/jetpost/pkg/job"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// The worker Build makes, configured from JETPOST_* variables, sends a
// published job with its idempotency key through the host limits, stores
// its result, serves readiness and per-host metrics, and stops on cancel.
func TestBuildRunsTheConfiguredWorker(t *testing.T) {
	ns := natstest.RunServer(t)
	var keys atomic.Value
	tgt := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys.Store(r.Header.Get("X-Job"))
	}))
	defer tgt.Close()
	for k, v := range map[string]string{
		"JETPOST_NATS_URL": ns.ClientURL(), "JETPOST_ALLOWED_NETWORKS": "127.0.0.0/8",
		"JETPOST_HTTP_ADDR": "127.0.0.1:0", "JETPOST_IDEMPOTENCY_HEADER": "X-Job",
		"JETPOST_WORKER_ID": "built", "JETPOST_MAX_INFLIGHT": "4",
	} {
		t.Setenv(k, v)
	}
	cfg, err := config.LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := daemon.Build(ctx, cfg, nc, daemon.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	svc.Listening = func(a string) { addr <- a }
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	ops := "http://" + <-addr

	publish(t, nc, &job.Job{ID: "j1", Batch: "b", Method: "GET", URL: tgt.URL + "/x", EnqueuedAt: time.Now().UTC()})
	waitFor(t, func() bool { return storedResults(t, nc, "b") == 1 })
	if got := keys.Load(); got != "j1" {
		t.Errorf("X-Job header %v, want the job id", got)
	}
	waitFor(t, func() bool { return get(t, ops+"/readyz") == "ready\n" })
	if m := get(t, ops+"/metrics"); !strings.Contains(m, "jetpost_host_admitted_total") {
		t.Errorf("metrics lack the per-host admission counters:\n%s", m)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestBuildStopsRetryingWhenCancelled(t *testing.T) {
	ns := natstest.RunServer(t)
	t.Setenv("JETPOST_NATS_URL", ns.ClientURL())
	cfg, err := config.LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ns.DisableJetStream() // every setup request now fails
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancelled in the pause after the first failed try: no try may follow.
	log := zerolog.New(cancelOn{"failed; retrying", cancel})
	var tries atomic.Int32
	wrap := func(js jetstream.JetStream) jetstream.JetStream { return countingJS{js, &tries} }
	if _, err := daemon.Build(ctx, cfg, nc, daemon.Options{Log: log, WrapJetStream: wrap}); err == nil || !strings.Contains(err.Error(), "setting up streams") {
		t.Fatalf("Build: %v, want a setup error", err)
	}
	if n := tries.Load(); n != 1 {
		t.Errorf("%d tries to create the streams, want 1: cancelled in the pause after the first", n)
	}
}

// cancelOn calls cancel when a log line holds msg.
type cancelOn struct {
	msg    string
	cancel context.CancelFunc
}

func (c cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.msg) {
		c.cancel()
	}
	return len(p), nil
}

// countingJS counts the tries to set a stream up (each begins by looking
// it up).
type countingJS struct {
	jetstream.JetStream
	n *atomic.Int32
}

func (c countingJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	c.n.Add(1)
	return c.JetStream.Stream(ctx, name)
}

func publish(t *testing.T, nc *nats.Conn, j *job.Job) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	pub := queue.NewPublisher(js, queue.NewNames("jetpost"), 1, nil)
	if err := pub.Publish(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	if st := pub.Close(); st.Published != 1 {
		t.Fatalf("published %+v", st)
	}
}

// storedResults counts a batch's result messages.
func storedResults(t *testing.T, nc *nats.Conn, batch string) uint64 {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	names := queue.NewNames("jetpost")
	s, err := js.Stream(context.Background(), names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(names.ResultSubject(batch)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[names.ResultSubject(batch)]
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitFor polls a condition; the deadline only ends a broken test (a
// cluster node's restart and catch-up under -race on a loaded machine may
// take most of a minute).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
