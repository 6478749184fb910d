package fleetrate_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/internal/workertest"
	"github.com/jetpost/jetpost/pkg/hostlimit"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

// The whole pipeline in one process: a real JetStream server, workers that
// each have their own NATS connection, consumer, sender and limiter (as
// separate processes would), and real HTTP targets that record what they
// receive. Assertions are on what the targets saw and on the results,
// never on how fast a loaded machine managed to go.

var names = workertest.Names()

var streams = workertest.Streams()

type fleetOpts struct {
	workers     int
	maxInflight int
	rates       string
	fixed       bool
}

// startFleet runs o.workers workers; it returns their limiters.
func startFleet(t *testing.T, ns *server.Server, o fleetOpts) []*hostlimit.Limiter {
	t.Helper()
	rules, err := hostlimit.ParseRules(o.rates)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var limiters []*hostlimit.Limiter
	for i := range o.workers {
		id := fmt.Sprintf("w%d", i+1)
		js := jsConn(t, ns)
		if err := queue.Setup(ctx, js, names, streams); err != nil {
			t.Fatal(err)
		}
		// As cmd/worker: a handler per request in flight and per job
		// waiting for its host; the sender bounds the requests.
		waiting := o.maxInflight
		cons, err := queue.NewConsumer(ctx, js, names, queue.ConsumerConfig{
			MaxInflight: o.maxInflight + waiting, Prefetch: max(4, o.maxInflight/4), AckWait: 30 * time.Second, MaxAckPending: 20000,
			ShutdownTimeout: 10 * time.Second, Worker: id, Streams: streams, PullWait: 200 * time.Millisecond,
		}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		store, err := fleetrate.Open(ctx, js, fleetrate.Bucket(names.Prefix), 1)
		if err != nil {
			t.Fatal(err)
		}
		lim, err := hostlimit.New(hostlimit.Config{MaxInflight: o.maxInflight, Fixed: o.fixed, Rates: rules, Buckets: store,
			MaxWaiting: waiting, Peers: func() int { return o.workers }})
		if err != nil {
			t.Fatal(err)
		}
		limiters = append(limiters, lim)
		snd, err := sender.New(sender.Config{
			// Longer than any wait of a test's target (the gate of
			// TestFleetRateLimitAcrossThreeWorkersAndOtherHostsFlowPast).
			Timeout: time.Minute, MaxConnsPerHost: o.maxInflight, IdempotencyHeader: "Idempotency-Key",
			AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			Breaker:         sender.Breaker{Failures: 1000, OpenTimeout: time.Second},
			Admission:       lim,
			MaxRequests:     o.maxInflight,
		})
		if err != nil {
			t.Fatal(err)
		}
		w := worker.New(worker.Config{
			ID: id, MaxAttempts: 10,
			Backoff: sender.Backoff{Base: 10 * time.Millisecond, Cap: 100 * time.Millisecond}, MaxJobAge: time.Hour,
		}, snd, worker.Observer{}, zerolog.Nop())
		svc := &worker.Service{Consumer: cons, Worker: w, Log: zerolog.Nop()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer snd.Close()
			if err := svc.Run(ctx); err != nil {
				t.Errorf("worker %s: %v", id, err)
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return limiters
}

// enqueueAndWait publishes jobs as enqueue does and returns every result
// stored on the batch's result subject, failing on a second one for a job.
func enqueueAndWait(t *testing.T, ns *server.Server, batch string, jobs []*job.Job) map[string]*job.Result {
	t.Helper()
	js := jsConn(t, ns)
	if err := queue.Setup(t.Context(), js, names, streams); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute) // bounds a broken test only
	defer cancel()
	pub := queue.NewPublisher(js, names, 256, nil)
	now := time.Now().UTC()
	for _, j := range jobs {
		j.Batch, j.EnqueuedAt = batch, now
		if err := pub.Publish(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	if st := pub.Close(); st.Published != len(jobs) {
		t.Fatalf("published %d of %d", st.Published, len(jobs))
	}
	cons, err := js.OrderedConsumer(ctx, names.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{names.ResultSubject(batch)},
	})
	if err != nil {
		t.Fatal(err)
	}
	results := map[string]*job.Result{}
	for len(results) < len(jobs) {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Minute))
		if err != nil {
			t.Fatalf("reading results: %v (have %d of %d)", err, len(results), len(jobs))
		}
		r, err := job.DecodeResult(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := results[r.ID]; dup {
			t.Fatalf("second result for job %s", r.ID)
		}
		results[r.ID] = r
	}
	return results
}

// newTarget is a real target that records when each request arrives;
// capacity > 0 answers 429 at once above capacity concurrent requests.
func newTarget(capacity int, latency time.Duration) *target.Target {
	return target.New(target.Options{Capacity: capacity, Latency: latency, RecordArrivals: true})
}

func jobsFor(prefix, url string, n int) []*job.Job {
	jobs := make([]*job.Job, n)
	for i := range jobs {
		jobs[i] = &job.Job{ID: fmt.Sprintf("%s-%05d", prefix, i), Method: "GET", URL: fmt.Sprintf("%s/items/%d", url, i)}
	}
	return jobs
}

func TestFleetRateLimitAcrossThreeWorkersAndOtherHostsFlowPast(t *testing.T) {
	ns := natstest.RunServer(t)
	limited, free := newTarget(0, 0), newTarget(0, 0)
	const n, rate, burst = 400, 100, 5
	// The limited host's last request is answered only once the unlimited
	// host has received all of its n: if its jobs were held up behind the
	// limited ones, they would never all arrive. An order of events, not a
	// race against the rate that a loaded machine can lose.
	var limitedSeen, freeSeen atomic.Int64
	freeDone := make(chan struct{})
	ls := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if limitedSeen.Add(1) == n {
			select {
			case <-freeDone:
			case <-time.After(50 * time.Second): // bounds a broken test only, within the request timeout
				t.Errorf("the unlimited host received %d of %d requests while the limited host's last one waited",
					freeSeen.Load(), n)
			}
		}
		limited.ServeHTTP(w, r)
	}))
	fs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		free.ServeHTTP(w, r)
		if freeSeen.Add(1) == n {
			close(freeDone)
		}
	}))
	defer ls.Close()
	defer fs.Close()
	startFleet(t, ns, fleetOpts{workers: 3, maxInflight: 16, rates: fmt.Sprintf("%s=%d/s:%d", ls.Listener.Addr(), rate, burst)})

	jobs := append(jobsFor("limited", ls.URL, n), jobsFor("free", fs.URL, n)...)
	res := enqueueAndWait(t, ns, "fleet", jobs)
	for id, r := range res {
		if !r.OK || r.Attempts != 1 {
			t.Fatalf("job %s: ok=%v attempts=%d (%s); deferrals must not spend attempts", id, r.OK, r.Attempts, r.Error)
		}
	}
	arr := limited.Arrivals()
	if len(arr) != n {
		t.Fatalf("limited target received %d requests for %d jobs", len(arr), n)
	}
	// However fast or slow the machine, n requests at rate/s (burst b, and
	// a lease of up to a tenth of a second per worker) cannot arrive in less
	// than (n - b - 3×rate/10)/rate seconds; without coordination three
	// workers would take a third of that. Slack for the first request being
	// late.
	span := arr[len(arr)-1].Sub(arr[0])
	minSpan := time.Duration(float64(n-burst-3*rate/10)/rate*float64(time.Second)) - 500*time.Millisecond
	t.Logf("%d requests in %v: %.1f/s (limit %d/s)", n, span, float64(n-1)/span.Seconds(), rate)
	if span < minSpan {
		t.Fatalf("%d requests arrived within %v; at %d/s they need at least %v", n, span, rate, minSpan)
	}
	// Jobs for the unlimited host were not held up behind the limited ones
	// (the gate above); how far ahead they finished is the machine's speed.
	freeArr := free.Arrivals()
	t.Logf("the unlimited host's last request came after %d of the limited host's %d",
		sort.Search(len(arr), func(i int) bool { return arr[i].After(freeArr[len(freeArr)-1]) }), n)
}

func TestAdaptiveConcurrencyAgainstA429Host(t *testing.T) {
	// The target: 429 above 30 concurrent requests, 50 ms latency.
	// A fixed pool of 200 would be answered 429 most of the time; the
	// adaptive limit keeps 429s rare and every job succeeds.
	ns := natstest.RunServer(t)
	tg := newTarget(30, 50*time.Millisecond)
	srv := httptest.NewServer(tg)
	defer srv.Close()
	lims := startFleet(t, ns, fleetOpts{workers: 1, maxInflight: 200})
	const n = 1500
	res := enqueueAndWait(t, ns, "adaptive", jobsFor("a", srv.URL, n))
	for id, r := range res {
		if !r.OK {
			t.Fatalf("job %s failed: %s", id, r.Error)
		}
	}
	st := tg.Stats().ByStatus
	share := float64(st[429]) / float64(st[200]+st[429])
	limit := lims[0].Snapshot()[0].Limit
	t.Logf("200: %d, 429: %d (%.1f%%), peak concurrency %d, final limit %d", st[200], st[429], 100*share, tg.Stats().MaxInFlight, limit)
	if st[200] != n {
		t.Fatalf("%d successful requests for %d jobs", st[200], n)
	}
	// The ≤ 2 % of the issue is a benchmark figure (bench/cmd/limitbench), not a
	// test bound: on a quiet machine this test sees 0.5-3 %, but once, with
	// the whole suite running three times beside a CPU hog, it saw 14.8 %.
	// Under such load most 429s answer requests admitted before the limit
	// was cut and sent late by a starved scheduler (73 of 89 in one traced
	// run); each cut takes effect only for requests admitted after it. A fixed
	// pool of 200 against this host is answered 429 about 86 % of the time,
	// so a third still tells an adaptive limit from none.
	if share > 1.0/3 {
		t.Fatalf("%.1f%% of requests were answered 429", 100*share)
	}
	// The same holds for the final limit: requests admitted but sent late
	// let it grow past what the host tested, so only "far below the pool"
	// is a bound load cannot break; limitbench measures how close to 30.
	if limit >= 100 {
		t.Fatalf("limit %d: the host takes 30, the pool is 200", limit)
	}
}
