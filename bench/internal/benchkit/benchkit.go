// Package benchkit holds what the measuring commands (bench/cmd/bench,
// bench/cmd/limitbench) share: building the binaries under test, an
// embedded JetStream server with a temporary store, a clean environment for
// child processes, and the machine facts a figure means little without.
// Tests start their servers with internal/natstest.
package benchkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetpost/jetpost/internal/config"
)

// ModuleRoot finds the directory holding go.mod, walking up from the
// working directory, so `go run ./bench/cmd/...` works from anywhere in the repo.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Build compiles pkgs (e.g. "./cmd/worker") into dir from the module root,
// as a user's `make build` would: no race detector, default flags.
func Build(ctx context.Context, root, dir string, pkgs ...string) error {
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", dir + string(os.PathSeparator)}, pkgs...)...)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	return nil
}

// CleanEnv is this process's environment without any JETPOST_ variable, so
// a developer's shell settings cannot skew a run.
func CleanEnv() []string { return config.StripEnv(os.Environ()) }

// FreeAddr returns a loopback address with a port free right now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// LoadAvg is the 1, 5 and 15 minute load averages, "unknown" off Linux.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// Broker is an embedded JetStream server on a random loopback port with a
// temporary store: what a deployment's nats-server is, inside this
// process, so its CPU time is the benchmark's.
type Broker struct {
	NS  *server.Server
	URL string
	dir string
}

// StartBroker starts a Broker with its store under parent; maxPayload 0
// keeps the server's default.
func StartBroker(parent string, maxPayload int32) (*Broker, error) {
	dir, err := os.MkdirTemp(parent, "nats-")
	if err != nil {
		return nil, err
	}
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true, MaxPayload: maxPayload,
	})
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("nats server did not become ready")
	}
	return &Broker{NS: ns, URL: ns.ClientURL(), dir: dir}, nil
}

// Dir is the server's store directory: what its disk use is measured on.
func (b *Broker) Dir() string { return b.dir }

// Stop shuts the server down and removes its store.
func (b *Broker) Stop() {
	b.NS.Shutdown()
	b.NS.WaitForShutdown()
	_ = os.RemoveAll(b.dir)
}
