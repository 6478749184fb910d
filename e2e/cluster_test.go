package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/natstest"
)

// Issue 18: a node of a 3-node cluster dies and nothing may stop the fleet.
// Every test runs 3 worker processes and enqueue --wait against three
// clustered servers with everything replicated 3 ways, and compares the
// batch's time with the same batch on a cluster that loses nothing.

const (
	clusterJobs = 3000
	// clusterAckWait is longer than a test's whole budget (chaosBudget): a
	// job that waited out its ack wait could not end before the deadline,
	// so a batch that completes shows that none did.
	clusterAckWait = 10 * time.Minute
)

// cluster is a 3-node JetStream cluster on loopback and the test's own
// view of it.
type cluster struct {
	t        *testing.T
	servers  []*server.Server
	url      string // every node, as workers and enqueue are configured
	o        *observer
	deadline time.Time
}

func startCluster(t *testing.T, deadline time.Time) *cluster {
	t.Helper()
	c := &cluster{t: t, servers: natstest.Cluster(t, 3), deadline: deadline}
	var urls []string
	for _, s := range c.servers {
		urls = append(urls, s.ClientURL())
	}
	c.url = strings.Join(urls, ",")
	c.o = newObserver(t, c.url)
	return c
}

// pool returns workers for the cluster: every stream and bucket
// replicated 3 ways, and an ack wait no test may wait out.
func (c *cluster) pool() *pool {
	return &pool{t: c.t, env: workerEnv(c.url,
		fmt.Sprintf("JETPOST_MAX_INFLIGHT=%d", chaosInflight),
		fmt.Sprintf("JETPOST_PREFETCH=%d", chaosPrefetch),
		"JETPOST_ACK_WAIT="+clusterAckWait.String(),
		"JETPOST_REPLICAS=3",
	)}
}

func (c *cluster) enqueueEnv() []string {
	return []string{"JETPOST_NATS_URL=" + c.url, "JETPOST_REPLICAS=3"}
}

// server returns the running node named name.
func (c *cluster) server(name string) *server.Server {
	c.t.Helper()
	for _, s := range c.servers {
		if s.Name() == name && s.Running() {
			return s
		}
	}
	c.t.Fatalf("%q is not a running node of the test's cluster", name)
	return nil
}

// stop shuts a node down for good.
func (c *cluster) stop(name string) {
	c.t.Helper()
	s := c.server(name)
	s.Shutdown()
	s.WaitForShutdown()
}

// batchRun is what one batch took.
type batchRun struct {
	elapsed   time.Duration // enqueue --wait from start to exit
	recovered time.Duration // from the failure to the end (0 without one)
	before    uint64        // results stored when the failure struck
	workers   *pool
	enq       *proc
}

// runBatch runs clusterJobs jobs through 3 workers of p and enqueue --wait
// under batch: one worker lays the streams and buckets out, prepare (if
// set) runs, two more workers start and the batch is enqueued; fail (if
// set) runs once a third of the results are stored. It checks the outcome:
// exactly one result per job, and no request sent twice.
func (c *cluster) runBatch(p *pool, batch string, prepare, fail func()) batchRun {
	c.t.Helper()
	tg, tURL := chaosTarget(c.t)
	p.spawn().waitLineUntil("consuming jobs", c.deadline)
	if prepare != nil {
		prepare()
	}
	enq, out, began := p.startBatch(2, c.deadline, clusterJobs, tURL, batch, c.enqueueEnv())
	r := batchRun{workers: p, enq: enq}
	var lost time.Time
	if fail != nil {
		c.o.until(c.deadline, batch, "a third of the results", func() bool { return c.o.stored(batch) >= clusterJobs/3 })
		r.before = c.o.stored(batch)
		lost = time.Now()
		fail()
	}
	if code := exitCode(c.t, enq, c.deadline, func() string { return c.o.state(batch) }); code != 0 {
		c.t.Fatalf("enqueue exit %d\n%s\n%s", code, enq.output(), c.o.state(batch))
	}
	r.elapsed = time.Since(began)
	if fail != nil {
		r.recovered = time.Since(lost)
	}
	checkBatch(c.t, c.o, tg, batch, out, clusterJobs, c.deadline)
	// Every job's request reached the target exactly once: the failover
	// sent nothing twice (a job settled by a stored result sends nothing).
	st := tg.Stats()
	if st.Duplicates != 0 || st.Requests != clusterJobs {
		c.t.Errorf("target saw %d requests, %d duplicates, at most %d sends of one job; want each of %d jobs sent once",
			st.Requests, st.Duplicates, maxSends(tg), clusterJobs)
	}
	return r
}

// baseline is the same batch on a cluster that loses nothing.
func baseline(t *testing.T, deadline time.Time) time.Duration {
	t.Helper()
	var took time.Duration
	t.Run("baseline", func(t *testing.T) {
		c := startCluster(t, deadline)
		took = c.runBatch(c.pool(), "baseline", nil, nil).elapsed
	})
	return took
}

// report logs a failover batch's times against the baseline, and what the
// workers said.
func (c *cluster) report(what string, r batchRun, base time.Duration) {
	c.t.Helper()
	c.t.Logf("%d jobs, 3 workers, 3 nodes, R3, ACK_WAIT %s: %s after %d results; batch %.1fs (%.1fs after the loss) against %.1fs without a failure; %s",
		clusterJobs, clusterAckWait, what, r.before, r.elapsed.Seconds(), r.recovered.Seconds(), base.Seconds(), lastLine(r.enq.output()))
	c.t.Logf("worker warnings: %v; enqueue warnings: %v; failover: %v", warnings(r.workers.all...), warnings(r.enq),
		said(r.workers.all, "has a new leader", "NAKed the jobs no worker holds", "its stored result settles"))
	for _, l := range lines(r.workers.all, "census after") {
		c.t.Log(l)
	}
}

// said counts the processes' log lines that contain each of texts.
func said(ps []*proc, texts ...string) map[string]int {
	m := map[string]int{}
	for _, s := range texts {
		m[s] = len(lines(ps, s))
	}
	return m
}

// lines returns the processes' log lines that contain text.
func lines(ps []*proc, text string) []string {
	var out []string
	for _, p := range ps {
		for _, l := range strings.Split(p.output(), "\n") {
			if strings.Contains(l, text) {
				out = append(out, l)
			}
		}
	}
	return out
}

// createLane creates batch's consumer before its jobs are published, as
// the workers would on finding them (they use the one they find), so that
// a test can place its leader first.
func (o *observer) createLane(batch string) {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o.lane = "batch_" + batch
	if _, err := o.js.CreateConsumer(ctx, "JETPOST_JOBS", jetstream.ConsumerConfig{
		Durable: o.lane, FilterSubject: "jetpost.jobs." + batch, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: clusterAckWait, MaxDeliver: -1, MaxAckPending: 1_000_000, InactiveThreshold: time.Hour,
	}); err != nil {
		o.t.Fatal(err)
	}
}

// leaders names the node leading each stream and bucket, and the batch's
// consumer ("batch consumer") from createLane until the workers delete it.
func (o *observer) leaders() (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m := map[string]string{}
	names := o.js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := o.js.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		if ci := s.CachedInfo().Cluster; ci != nil && ci.Leader != "" {
			m[name] = ci.Leader
		}
	}
	if err := names.Err(); err != nil {
		return nil, err
	}
	if o.lane == "" {
		return m, nil
	}
	c, err := o.js.Consumer(ctx, "JETPOST_JOBS", o.lane)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		// The workers delete a batch's consumer once it is drained.
		m["batch consumer"] = "(deleted, drained)"
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	if ci := c.CachedInfo().Cluster; ci != nil && ci.Leader != "" {
		m["batch consumer"] = ci.Leader
	}
	return m, nil
}

// leadersUntil asks for the leaders until every asset has one.
func (c *cluster) leadersUntil(what string) map[string]string {
	c.t.Helper()
	var m map[string]string
	c.o.until(c.deadline, what, "the cluster to report "+what, func() bool {
		var err error
		m, err = c.o.leaders()
		return err == nil && m["JETPOST_JOBS"] != "" && (c.o.lane == "" || m["batch consumer"] != "")
	})
	return m
}

// moveLeader asks asset's leader to step down in favour of node, and waits
// until node leads it. asset is a stream name or "batch consumer".
func (c *cluster) moveLeader(asset, node string) {
	c.t.Helper()
	api := "$JS.API.STREAM.LEADER.STEPDOWN." + asset
	if asset == "batch consumer" {
		api = "$JS.API.CONSUMER.LEADER.STEPDOWN.JETPOST_JOBS." + c.o.lane
	}
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": node}})
	c.o.until(c.deadline, asset, asset+" led by "+node, func() bool {
		if m, err := c.o.leaders(); err == nil && m[asset] == node {
			return true
		}
		// An election under way refuses the request; the next poll asks again.
		_, _ = c.o.nc.Request(api, req, 5*time.Second)
		return false
	})
}

// busiestNode is the node leading the most streams, buckets and the
// consumer, the meta leader's role counted too; it returns how many it
// leads and every asset's leader.
func (c *cluster) busiestNode() (string, int, map[string]string) {
	c.t.Helper()
	m := c.leadersUntil("its leaders")
	led := map[string]int{}
	for _, l := range m {
		led[l]++
	}
	var victim string
	for _, s := range c.servers {
		if s.JetStreamIsLeader() {
			led[s.Name()]++
		}
		if victim == "" || led[s.Name()] > led[victim] {
			victim = s.Name()
		}
	}
	return victim, led[victim], m
}

// buckets lists the KV buckets' streams among assets.
func buckets(assets map[string]string) []string {
	var b []string
	for a := range assets {
		if strings.HasPrefix(a, "KV_") {
			b = append(b, a)
		}
	}
	slices.Sort(b)
	return b
}

// checkLedBySurvivors fails the test for an asset still led by victim.
func (c *cluster) checkLedBySurvivors(victim string) map[string]string {
	c.t.Helper()
	after := c.leadersUntil("its leaders again")
	for asset, leader := range after {
		if leader == victim {
			c.t.Errorf("%s is still led by the stopped node %s", asset, leader)
		}
	}
	return after
}

// (i) The node leading the jobs stream and the batch's consumer stops
// mid-batch: acks, result publishes and pulls in flight to it are resolved
// against the new leaders within seconds, not after the ack wait, and no
// job is sent twice.
func TestClusterJobsLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("two 3-node clusters, 6,000 jobs and a lost node")
	}
	deadline := time.Now().Add(chaosBudget)
	base := baseline(t, deadline)
	c := startCluster(t, deadline)
	var victim string
	r := c.runBatch(c.pool(), "jobsleader", func() {
		c.o.createLane("jobsleader")
		victim = c.leadersUntil("its leaders")["JETPOST_JOBS"]
		// The worst case: the consumer's leader goes with the stream's.
		c.moveLeader("batch consumer", victim)
	}, func() { c.stop(victim) })
	after := c.checkLedBySurvivors(victim)
	c.report(fmt.Sprintf("stopped %s, leader of the jobs stream and its consumer (leaders after: %v)", victim, after), r, base)
}

// (ii) The node leading every bucket (attempts, done, breakers, host
// limits, rates) stops mid-batch, while another node leads the jobs stream
// and its consumer: the batch goes on, with every job sent once.
func TestClusterBucketLeadersLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("two 3-node clusters, 6,000 jobs and a lost node")
	}
	deadline := time.Now().Add(chaosBudget)
	base := baseline(t, deadline)
	c := startCluster(t, deadline)
	var victim string
	var moved []string
	r := c.runBatch(c.pool(), "bucketleaders", func() {
		c.o.createLane("bucketleaders")
		m := c.leadersUntil("its leaders")
		for _, s := range c.servers {
			if s.Name() != m["JETPOST_JOBS"] && s.Name() != m["batch consumer"] {
				victim = s.Name()
				break
			}
		}
		moved = buckets(m)
		for _, b := range moved {
			c.moveLeader(b, victim)
		}
	}, func() { c.stop(victim) })
	if len(moved) < 4 {
		t.Errorf("only %d buckets on the cluster (%v); want attempts, done, breakers, host limits, rates", len(moved), moved)
	}
	after := c.checkLedBySurvivors(victim)
	c.report(fmt.Sprintf("stopped %s, leader of %v (leaders after: %v)", victim, moved, after), r, base)
}

// (iii) A node is down when the workers start: with the streams and
// buckets laid out before, they come up on the two others, consume, and
// finish the batch.
func TestClusterWorkersStartWhileNodeDown(t *testing.T) {
	if testing.Short() {
		t.Skip("two 3-node clusters, 6,000 jobs and a node down")
	}
	deadline := time.Now().Add(chaosBudget)
	base := baseline(t, deadline)
	c := startCluster(t, deadline)
	// One worker lays everything out with all three nodes up, then goes.
	setup := c.pool().spawn()
	setup.waitLineUntil("consuming jobs", deadline)
	setup.kill()
	victim, led, m := c.busiestNode()
	c.stop(victim)
	r := c.runBatch(c.pool(), "nodedown", nil, nil)
	c.report(fmt.Sprintf("workers started while %s was down (it led %d of %d assets: %v)", victim, led, len(m), m), r, base)
}
