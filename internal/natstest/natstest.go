// Package natstest runs real NATS servers for tests: an embedded
// nats-server with JetStream on a random loopback port and a temporary
// store, shut down when the test ends. Tests talk to the real broker, never
// to a fake.
package natstest

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// RunServer starts a JetStream-enabled server on 127.0.0.1 with a random
// port and a store under t.TempDir().
func RunServer(t testing.TB) *server.Server {
	t.Helper()
	return RunServerAt(t, -1, t.TempDir())
}

// RunServerAt starts a server on a given port (-1: random) and store, so a
// test can stop a server and start it again on the same port and data.
func RunServerAt(t testing.TB, port int, store string) *server.Server {
	t.Helper()
	return start(t, &server.Options{Port: port, StoreDir: store, MaxPayload: 8 << 20})
}

// RunServerWith starts a server with the given options (authentication, a
// small max_payload…) on a random loopback port with a temporary store.
func RunServerWith(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	opts.Port, opts.StoreDir = -1, t.TempDir()
	return start(t, opts)
}

// start fills in what every test server has (loopback, JetStream, quiet)
// and runs it until the test ends.
func start(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.JetStream, opts.NoLog, opts.NoSigs = "127.0.0.1", true, true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats server did not become ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// Port returns the client port of a running server.
func Port(ns *server.Server) int {
	return ns.Addr().(*net.TCPAddr).Port
}

// Cluster starts n clustered JetStream servers on loopback ports and returns
// them once they have elected a meta leader. Only the first server's route
// port is picked beforehand (it routes to itself, as JetStream clustering
// requires a configured route), and picked again if another process took
// it first; the others bind ports the kernel chooses and route to it, and
// gossip completes the mesh.
func Cluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	servers := make([]*server.Server, n)
	dir := t.TempDir()
	var seed string
	for i := range servers {
		for try := 1; servers[i] == nil; try++ {
			opts := &server.Options{
				ServerName: fmt.Sprintf("n%d", i+1),
				Host:       "127.0.0.1",
				Port:       -1,
				JetStream:  true,
				StoreDir:   filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
				NoLog:      true,
				NoSigs:     true,
				Cluster:    server.ClusterOpts{Name: "jetpost-test", Host: "127.0.0.1", Port: -1},
			}
			route := seed
			if i == 0 {
				opts.Cluster.Port = freePort(t)
				route = fmt.Sprintf("nats-route://127.0.0.1:%d", opts.Cluster.Port)
			}
			opts.Routes = server.RoutesFromStr(route)
			ns, err := server.NewServer(opts)
			if err != nil {
				t.Fatalf("nats server %d: %v", i+1, err)
			}
			ns.Start()
			if !ns.ReadyForConnections(30 * time.Second) {
				ns.Shutdown()
				ns.WaitForShutdown()
				if try == 3 {
					t.Fatalf("clustered nats server n%d did not become ready", i+1)
				}
				continue
			}
			t.Cleanup(func() {
				ns.Shutdown()
				ns.WaitForShutdown()
			})
			servers[i], seed = ns, route
		}
	}
	// JetStream requests sent before a meta leader exists go unanswered.
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, ns := range servers {
			if ns.JetStreamIsLeader() {
				return servers
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no JetStream meta leader within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
