package natstest

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// TestCluster is a cluster of JetStream servers on loopback whose nodes a
// test can stop and start again on the same ports and stores.
type TestCluster struct {
	t       testing.TB
	opts    []*server.Options
	Servers []*server.Server // nil while a node is stopped
}

// NewCluster starts n clustered JetStream servers (n1…nn) and returns once
// they have elected a meta leader. Every node is shut down when the test ends.
func NewCluster(t testing.TB, n int) *TestCluster {
	t.Helper()
	c := &TestCluster{t: t, opts: make([]*server.Options, n), Servers: make([]*server.Server, n)}
	clientPorts, routePorts := make([]int, n), make([]int, n)
	routes := make([]string, n)
	for i := range n {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[i])
	}
	dir := t.TempDir()
	for i := range n {
		c.opts[i] = &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: clientPorts[i],
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "jetpost-test", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
	}
	t.Cleanup(func() {
		for i := range c.Servers {
			c.Stop(i)
		}
	})
	for i := range n {
		c.Start(i)
	}
	c.WaitMetaLeader()
	return c
}

// URL lists every node's client URL, as workers are told them.
func (c *TestCluster) URL() string {
	urls := make([]string, len(c.opts))
	for i, o := range c.opts {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", o.Port)
	}
	return strings.Join(urls, ",")
}

// Start starts node i (again).
func (c *TestCluster) Start(i int) {
	c.t.Helper()
	if c.Servers[i] != nil {
		return
	}
	o := *c.opts[i]
	ns, err := server.NewServer(&o)
	if err != nil {
		c.t.Fatalf("nats server %s: %v", o.ServerName, err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		c.t.Fatalf("nats server %s did not become ready", o.ServerName)
	}
	c.Servers[i] = ns
}

// Stop shuts node i down; a node that does not stop within a minute fails
// the test rather than hang it.
func (c *TestCluster) Stop(i int) {
	ns := c.Servers[i]
	if ns == nil {
		return
	}
	c.Servers[i] = nil
	stopped := make(chan struct{})
	go func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		c.t.Errorf("nats server %s did not shut down within a minute", c.opts[i].ServerName)
	}
}

// Index is the node named name (n1…), or -1.
func (c *TestCluster) Index(name string) int {
	for i, o := range c.opts {
		if o.ServerName == name {
			return i
		}
	}
	return -1
}

// WaitMetaLeader waits until a running node leads JetStream's meta group
// and sees every running node as an online JetStream peer: requests sent
// before go unanswered, and a replicated stream created before a peer's
// first stats reached the leader fails "no suitable peers for placement".
func (c *TestCluster) WaitMetaLeader() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		running := 0
		for _, ns := range c.Servers {
			if ns != nil {
				running++
			}
		}
		for _, ns := range c.Servers {
			if ns != nil && ns.JetStreamIsLeader() && len(ns.JetStreamClusterPeers()) >= running {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatal("no JetStream meta leader seeing every running node within 60s")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded above
	}
}
