package queue_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/pkg/job"
)

// syncBuffer collects log lines from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), msg)
}

// An auxiliary bucket that cannot be created (another stream holds its
// subjects) degrades its feature with one warning however often it is
// tried, keeps the breaker reports meanwhile, and once it can be created
// binds by itself and writes them.
func TestAuxBucketWarnsOnceAndRecovers(t *testing.T) {
	ns := natstest.RunServer(t)
	ctx := t.Context()
	js := jsFor(t, ns.ClientURL())
	n := queue.NewNames("jetpost")
	blocker := jetstream.StreamConfig{Name: "BLOCKER", Subjects: []string{"$KV." + n.BreakersBucket() + ".>"}}
	if _, err := js.CreateStream(ctx, blocker); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	// Each pause says a try failed and waits for the test's go-ahead: the
	// tries are the test's to count, not the clock's.
	paused, next := make(chan struct{}), make(chan struct{})
	aux := queue.NewAuxBucket(js, queue.BreakerBucketConfig(n, 0), queue.AuxOptions{
		Replicas: 1, Feature: "breaker states are not shared", Log: zerolog.New(&logs),
		Pause: func(int) time.Duration {
			select {
			case paused <- struct{}{}:
				<-next
			case <-ctx.Done():
			}
			return 0
		},
	})
	board := queue.NewBreakerBoard(aux)
	if err := aux.TryOnce(ctx); err == nil || !strings.Contains(err.Error(), n.BreakersBucket()) {
		t.Fatalf("first try: %v, want an error naming the bucket", err)
	}
	if _, err := aux.KV(); err == nil {
		t.Fatal("KV available while the bucket cannot be created")
	}
	open := queue.BreakerEntry{Host: "api.example.com:443", Worker: "w1", State: job.BreakerOpen, Since: time.Now().UTC()}
	if err := board.Report(ctx, open); err != nil {
		t.Fatalf("Report while the bucket is missing: %v (it must be kept, not fail)", err)
	}
	done := make(chan error, 1)
	go func() { done <- aux.Run(ctx) }()
	for i := range 4 { // four more failed tries
		select {
		case <-paused:
		case err := <-done:
			t.Fatalf("Run ended while the bucket could not be created: %v\n%s", err, logs.b.String())
		}
		if i < 3 {
			next <- struct{}{}
		}
	}
	if err := js.DeleteStream(ctx, "BLOCKER"); err != nil {
		t.Fatal(err)
	}
	// The next try succeeds; on a loaded machine one may still fail (a
	// call timing out), and is followed by another.
	for bound := false; !bound; {
		next <- struct{}{}
		select {
		case <-aux.Bound():
			bound = true
		case <-paused:
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if w := logs.count("auxiliary bucket unavailable"); w < 5 {
		t.Fatalf("%d failed tries logged, want at least 5:\n%s", w, logs.b.String())
	}
	if w := logs.count(`"level":"warn"`); w != 1 {
		t.Errorf("%d warnings, want exactly 1:\n%s", w, logs.b.String())
	}
	if r := logs.count("auxiliary bucket available again"); r != 1 {
		t.Errorf("%d recovery notes, want 1", r)
	}
	got, err := queue.ReadBreakerBoard(js, n).List(ctx)
	if err != nil || len(got) != 1 || got[0].Host != open.Host || got[0].State != job.BreakerOpen {
		t.Fatalf("board after recovery: %+v, %v; want the report kept while it was missing", got, err)
	}
}

// allStores sets every stream and bucket of n up with replicas, as a
// worker does (the auxiliary buckets included).
func allStores(ctx context.Context, js jetstream.JetStream, n queue.Names, replicas int, log zerolog.Logger) error {
	cfg := queue.StreamConfig{Replicas: replicas, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}
	if err := queue.EnsureStores(ctx, js, n, cfg, queue.SetupOptions{Attempts: true, Log: log}); err != nil {
		return err
	}
	for _, kc := range []jetstream.KeyValueConfig{
		queue.BreakerBucketConfig(n, 0), fleetrate.BucketConfig(n.RatesBucket()), fleetrate.BoardConfig(n.Prefix),
	} {
		if err := queue.NewAuxBucket(js, kc, queue.AuxOptions{Replicas: replicas, Log: log}).TryOnce(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Stores created with one replica (an older version, or JETPOST_REPLICAS
// left at 1) are raised to JETPOST_REPLICAS by the next setup, the
// breakers bucket included; a setup asking for fewer never lowers them.
func TestSetupRaisesReplicasAndNeverLowersThem(t *testing.T) {
	c := natstest.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute) // liveness guard
	defer cancel()
	js := jsFor(t, c.URL())
	n := queue.NewNames("jetpost")
	if err := allStores(ctx, js, n, 1, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	for _, r := range queue.Replication(ctx, js, n, 3, 10*time.Second) {
		if r.Replicas != 1 {
			t.Fatalf("%s created with %d replicas, want 1", r.Stream, r.Replicas)
		}
	}
	for _, want := range []int{3, 1} {
		if err := allStores(ctx, js, n, want, zerolog.Nop()); err != nil {
			t.Fatalf("setup with %d replicas: %v", want, err)
		}
		for _, r := range queue.Replication(ctx, js, n, 3, 10*time.Second) {
			if r.Replicas != 3 || r.Error != "" {
				t.Errorf("after a setup with %d: %s has %d replicas (%s), want 3", want, r.Stream, r.Replicas, r.Error)
			}
		}
	}
}

// Workers and enqueues started at the same moment all come up, on a fresh
// cluster and again with one of its three nodes down; status then names
// the replica that is down.
func TestConcurrentSetupsComeUpWithANodeDown(t *testing.T) {
	c := natstest.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute) // liveness guard
	defer cancel()
	n := queue.NewNames("jetpost")
	cfg := queue.StreamConfig{Replicas: 3, DedupWindow: time.Minute, ResultsMaxAge: time.Hour, AttemptsTTL: time.Hour}
	var logs syncBuffer
	setups := func(round string) {
		t.Helper()
		errs := make([]error, 6)
		var wg sync.WaitGroup
		for i := range errs {
			js := jsFor(t, c.URL())
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Even ones are workers (attempts bucket), odd ones enqueue.
				o := queue.SetupOptions{Attempts: i%2 == 0, Log: zerolog.New(&logs)}
				errs[i] = queue.EnsureStores(ctx, js, n, cfg, o)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: setup %d: %v\nlogs:\n%s", round, i, err, logs.b.String())
			}
		}
	}
	setups("fresh cluster")
	c.Stop(2)
	c.WaitMetaLeader()
	setups("n3 down")
	js := jsFor(t, c.URL())
	for _, r := range queue.Replication(ctx, js, n, 3, 10*time.Second) {
		if !r.Essential {
			continue
		}
		if r.Missing || r.Replicas != 3 {
			t.Errorf("%s: missing %v, %d replicas; want 3", r.Stream, r.Missing, r.Replicas)
		}
	}
	// The leaders notice the lost peer within a few heartbeats.
	waitUntil(t, func() bool {
		for _, r := range queue.Replication(ctx, js, n, 3, 10*time.Second) {
			if r.Stream == n.JobsStream() {
				return strings.Contains(fmt.Sprint(r.Problems()), "n3")
			}
		}
		return false
	})
}
