package fleetrate_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/pkg/hostlimit"
	"github.com/jetpost/jetpost/pkg/sender"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// jsConn is one process's connection: each simulated worker has its own.
func jsConn(t *testing.T, ns *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func openStore(t *testing.T, ns *server.Server) *fleetrate.Store {
	t.Helper()
	s, err := fleetrate.Open(t.Context(), jsConn(t, ns), fleetrate.Bucket("jetpost"), 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreLosesNoUpdateUnderContention(t *testing.T) {
	ns := natstest.RunServer(t)
	stores := []*fleetrate.Store{openStore(t, ns), openStore(t, ns), openStore(t, ns)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for _, s := range stores {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 40 {
					err := s.Update(t.Context(), "counter", func(cur []byte) ([]byte, error) {
						n, _ := strconv.Atoi(string(cur))
						return []byte(strconv.Itoa(n + 1)), nil
					})
					if err != nil && !strings.Contains(err.Error(), "contended") {
						t.Error(err)
						return
					}
					if err == nil {
						mu.Lock()
						ok++
						mu.Unlock()
					}
				}
			}()
		}
	}
	wg.Wait()
	kv, err := jsConn(t, ns).KeyValue(t.Context(), fleetrate.Bucket("jetpost"))
	if err != nil {
		t.Fatal(err)
	}
	final, err := kv.Get(t.Context(), "counter")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := strconv.Atoi(string(final.Value())); got != ok {
		t.Fatalf("counter %d after %d successful updates: an update was lost", got, ok)
	}
	if ok < 300 {
		t.Logf("%d of 360 updates gave up under contention", 360-ok)
	}
}

func TestStoreLeavesValueAloneWhenFnReturnsNil(t *testing.T) {
	ns := natstest.RunServer(t)
	s := openStore(t, ns)
	set := func(v string) {
		if err := s.Update(t.Context(), "k", func([]byte) ([]byte, error) { return []byte(v), nil }); err != nil {
			t.Fatal(err)
		}
	}
	set("a")
	if err := s.Update(t.Context(), "k", func(cur []byte) ([]byte, error) {
		if string(cur) != "a" {
			t.Errorf("cur = %q", cur)
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := s.Update(t.Context(), "k", func([]byte) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("fn's error: %v", err)
	}
	// A second process sees the first's value (a process's cache of what
	// it wrote is only a first guess, checked by the compare-and-swap).
	other := openStore(t, ns)
	if err := other.Update(t.Context(), "k", func(cur []byte) ([]byte, error) {
		if string(cur) != "a" {
			t.Errorf("other process read %q", cur)
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
}

// sharedClock is a fake clock shared by several limiters, as the wall
// clock is by the processes of a fleet.
type sharedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *sharedClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *sharedClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestFleetRateHoldsAcrossProcesses(t *testing.T) {
	// Three limiters, each with its own connection and store, on one
	// simulated clock: their combined admissions follow the one rate.
	ns := natstest.RunServer(t)
	clock := &sharedClock{t: time.Now()}
	rules, err := hostlimit.ParseRules("api.example.com=50/s:5")
	if err != nil {
		t.Fatal(err)
	}
	var limiters []*hostlimit.Limiter
	for range 3 {
		// A round trip slower than the default 2 s on a loaded machine
		// would read as "unreachable": this test is not about that.
		l, err := hostlimit.New(hostlimit.Config{MaxInflight: 100, Rates: rules, Buckets: openStore(t, ns), Now: clock.now,
			BucketTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		limiters = append(limiters, l)
	}
	req := sender.AdmitRequest{Host: "api.example.com:443"}
	admitted := make([]int, len(limiters))
	const steps, step = 1000, 10 * time.Millisecond // 10 simulated seconds
	order := rand.New(rand.NewPCG(14, 18))
	for range steps {
		// The limiters take turns in a shuffled order (a fixed seed)
		// rather than racing goroutines: which process reaches the broker
		// first would be the scheduler's choice, and on a loaded machine
		// one can lose most races. Their states are still separate,
		// shared only through the bucket.
		for _, i := range order.Perm(len(limiters)) {
			for range 4 {
				rel, err := limiters[i].Admit(t.Context(), req)
				if err != nil {
					var na *sender.NotAdmittedError
					if !errors.As(err, &na) || strings.Contains(na.Reason, "unreachable") {
						t.Errorf("refusal: %v", err)
					}
					break
				}
				admitted[i]++
				rel.Done(sender.Feedback{Sent: true, Status: 200})
			}
		}
		clock.advance(step)
	}
	total := admitted[0] + admitted[1] + admitted[2]
	t.Logf("admitted %v = %d in 10 s at 50/s", admitted, total)
	if total > 50*10+5 {
		t.Fatalf("fleet admitted %d in 10 s, limit 50/s burst 5 allows 505", total)
	}
	if total < 450 {
		t.Fatalf("fleet admitted only %d in 10 s at 50/s", total)
	}
	for i, n := range admitted {
		if n < 50 {
			t.Errorf("limiter %d got %d: one process should not starve", i, n)
		}
	}
}

func TestRateLimitedHostsWaitWhileNATSIsDown(t *testing.T) {
	ns := natstest.RunServer(t)
	rules, _ := hostlimit.ParseRules("api.example.com=50/s")
	l, err := hostlimit.New(hostlimit.Config{MaxInflight: 10, Rates: rules, Buckets: openStore(t, ns), BucketTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := l.Admit(t.Context(), sender.AdmitRequest{Host: "api.example.com:443"})
	if err != nil {
		t.Fatal(err)
	}
	rel.Done(sender.Feedback{Sent: true, Status: 200})
	ns.Shutdown()
	ns.WaitForShutdown()
	// Leased tokens lapse within a fraction of a second; after that nothing
	// is admitted to the limited host, while others go on.
	deadline := time.Now().Add(30 * time.Second) // bounds a broken test only
	for {
		rel, err := l.Admit(t.Context(), sender.AdmitRequest{Host: "api.example.com:443"})
		if err != nil {
			var na *sender.NotAdmittedError
			if !errors.As(err, &na) {
				t.Fatalf("refusal %v", err)
			}
			if strings.Contains(na.Reason, "unreachable") {
				break
			}
		} else {
			rel.Done(sender.Feedback{Sent: true, Status: 200})
		}
		if time.Now().After(deadline) {
			t.Fatal("still admitting to a rate-limited host 30 s after NATS went away")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rel, err = l.Admit(t.Context(), sender.AdmitRequest{Host: "unlimited.example:443"})
	if err != nil {
		t.Fatalf("unlimited host refused while NATS is down: %v", err)
	}
	rel.Done(sender.Feedback{})
}

func TestBoardShowsEachWorkersLimits(t *testing.T) {
	ns := natstest.RunServer(t)
	js := jsConn(t, ns)
	b, err := fleetrate.OpenBoard(t.Context(), js, "jetpost", 1)
	if err != nil {
		t.Fatal(err)
	}
	hosts := []hostlimit.HostState{{Host: "a:443", Limit: 31, InFlight: 30, Adaptive: true, Rate: "100/s"}}
	if err := b.Post(t.Context(), "w1", hosts, time.Now()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- b.Run(ctx, "w2", func() []hostlimit.HostState { return hosts[:1] }, time.Hour, nil)
	}()
	reader, err := fleetrate.OpenBoardReadOnly(t.Context(), jsConn(t, ns), "jetpost")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var got []fleetrate.WorkerLimits
	for len(got) < 2 {
		if got, err = reader.List(t.Context()); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("board lists %d workers, want 2", len(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got[0].Worker != "w1" || got[1].Worker != "w2" || got[0].Hosts[0].Limit != 31 || got[0].Hosts[0].Rate != "100/s" {
		t.Fatalf("board %+v", got)
	}
	// What Run listed last, without asking the server: the workers a
	// rescue's census waits for, until their posts are stale.
	for !slices.Equal(b.Fresh(time.Now()), []string{"w1", "w2"}) {
		if time.Now().After(deadline) {
			t.Fatalf("fresh workers %v, want w1 and w2", b.Fresh(time.Now()))
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, bounded above
	}
	if stale := b.Fresh(time.Now().Add(fleetrate.BoardFresh + time.Second)); len(stale) != 0 {
		t.Fatalf("fresh workers after BoardFresh: %v", stale)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, _ = reader.List(t.Context()); len(got) != 1 || got[0].Worker != "w1" {
		t.Fatalf("after w2 stopped the board lists %+v, want only w1", got)
	}
}

// Host names come from untrusted files: a report of a hundred long ones is
// cut to the busiest that fit in one message, rather than refused whole.
func TestBoardReportFitsMaxPayload(t *testing.T) {
	ns := natstest.RunServerWith(t, &server.Options{MaxPayload: 16 << 10})
	b, err := fleetrate.OpenBoard(t.Context(), jsConn(t, ns), "jetpost", 1)
	if err != nil {
		t.Fatal(err)
	}
	hosts := make([]hostlimit.HostState, fleetrate.MaxBoardHosts)
	for i := range hosts {
		name := fmt.Sprintf("%03d.%s", i, strings.Repeat("&", 240)) // six bytes each, escaped
		hosts[i] = hostlimit.HostState{Host: name + ":443", Limit: 10, Admitted: uint64(1000 - i), Adaptive: true}
	}
	if err := b.Post(t.Context(), "w1", hosts, time.Now()); err != nil {
		t.Fatalf("post of a large report: %v", err)
	}
	got, err := b.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(got[0].Hosts) == 0 || len(got[0].Hosts) >= len(hosts) {
		t.Fatalf("board %d workers, %d hosts; want w1 with some of its %d hosts", len(got), len(got[0].Hosts), len(hosts))
	}
	if got[0].Hosts[0].Host != hosts[0].Host {
		t.Errorf("first host %.20s…, want the busiest", got[0].Hosts[0].Host)
	}
}
