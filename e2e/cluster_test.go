package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetpost/jetpost/internal/natstest"
)

// leaders names the server leading each JetStream asset jetpost uses.
func (o *observer) leaders() (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m := map[string]string{}
	for _, name := range []string{"JETPOST_JOBS", "JETPOST_RESULTS", "JETPOST_DLQ"} {
		s, err := o.js.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		if ci := s.CachedInfo().Cluster; ci != nil {
			m[name] = ci.Leader
		}
		if name == "JETPOST_JOBS" {
			c, err := s.Consumer(ctx, "workers")
			if err != nil {
				return nil, err
			}
			if ci := c.CachedInfo().Cluster; ci != nil {
				m["consumer workers"] = ci.Leader
			}
		}
	}
	return m, nil
}

// Issue 4: three clustered NATS servers, streams with three replicas, and
// the server leading the jobs stream stops mid-batch. The other two keep a
// quorum; leaders are elected again, the workers and enqueue --wait move to
// a surviving server, and every job still ends with exactly one result.
func TestClusterNodeLossLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster, 3,000 jobs and a lost node")
	}
	deadline := time.Now().Add(chaosBudget)
	const n, batch = 3000, "cluster"
	servers := natstest.Cluster(t, 3)
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.ClientURL())
	}
	url := strings.Join(urls, ",")
	o := newObserver(t, url)
	// natstest.Cluster returns once the servers accept connections, before
	// they have elected a JetStream meta leader, and the broker never
	// answers a JetStream API request sent before that: the first worker
	// would sit out its whole setup timeout.
	o.until(deadline, batch, "a JetStream meta leader", func() bool {
		return slices.ContainsFunc(servers, (*server.Server).JetStreamIsLeader)
	})
	tg, tURL := chaosTarget(t)

	// startBatch lets one worker lay the streams out before the others
	// start.
	p := &pool{t: t, env: chaosWorkerEnv(url, "JETPOST_REPLICAS=3")}
	enq, out, began := p.startBatch(3, deadline, n, tURL, batch, []string{"JETPOST_NATS_URL=" + url, "JETPOST_REPLICAS=3"})
	enq.waitLineUntil(fmt.Sprintf("%d published", n), deadline)

	var leaders map[string]string
	o.until(deadline, batch, "the cluster to report its leaders", func() bool {
		var err error
		leaders, err = o.leaders()
		return err == nil && leaders["JETPOST_JOBS"] != ""
	})
	var victim *server.Server
	for _, s := range servers {
		if s.Name() == leaders["JETPOST_JOBS"] {
			victim = s
		}
	}
	if victim == nil {
		t.Fatalf("jobs stream leader %q is not one of the test's servers", leaders["JETPOST_JOBS"])
	}
	o.until(deadline, batch, "a third of the results", func() bool { return o.stored(batch) >= n/3 })
	before := o.stored(batch)
	victim.Shutdown()
	victim.WaitForShutdown()
	lost := time.Now()

	if code := exitCode(t, enq, deadline, func() string { return o.state(batch) }); code != 0 {
		t.Fatalf("enqueue exit %d\n%s\n%s", code, enq.output(), o.state(batch))
	}
	elapsed, recovered := time.Since(began), time.Since(lost)
	checkBatch(t, o, tg, batch, out, n, deadline)
	var after map[string]string
	o.until(deadline, batch, "the cluster to report its leaders again", func() bool {
		var err error
		after, err = o.leaders()
		return err == nil
	})
	for asset, leader := range after {
		if leader == victim.Name() {
			t.Errorf("%s is still led by the stopped server %s", asset, leader)
		}
	}

	// Duplicates are counted, not bounded: acks lost with the stopped server
	// (sent to it, or not yet replicated from it) make its successors
	// redeliver those jobs, and how many that is depends on timing, not on
	// the workers' windows.
	st := tg.Stats()
	inHand := len(p.live) * (chaosInflight + chaosPrefetch)
	t.Logf("%d jobs, 3 workers, 3 nodes, R3: stopped %s (leaders before %v, after %v) after %d results; "+
		"batch done %.1fs after the loss, %.1fs in all; target saw %d requests, %d duplicates (jobs workers can hold: %d), at most %d sends of one job; %s",
		n, victim.Name(), leaders, after, before, recovered.Seconds(), elapsed.Seconds(),
		st.Requests, st.Duplicates, inHand, maxSends(tg), lastLine(enq.output()))
	t.Logf("worker warnings: %v; enqueue warnings: %v", warnings(p.all...), warnings(enq))
}
