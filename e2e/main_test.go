// Package e2e runs the real binaries as separate processes against a real
// NATS server and a real HTTP target: what a user runs, including signals.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/schemas"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "jetpost-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The subprocesses are built without -race: the in-process tests cover
	// races; here we want realistic processes and a fast build.
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "../cmd/worker", "../cmd/enqueue", "../cmd/demotarget")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running binary whose stderr lines can be waited for.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	seen  chan struct{} // poked on every new line
	done  chan struct{}
	err   error
}

// start runs bin with env (on top of a clean JETPOST_-free environment).
func start(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, bin), args...)
	cmd.Env = append(baseEnv(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	p := &proc{t: t, cmd: cmd, seen: make(chan struct{}, 1), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.seen <- struct{}{}:
			default:
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", bin, p.output())
		}
	})
	return p
}

func baseEnv() []string {
	return append(config.StripEnv(os.Environ()), "JETPOST_LOG_FORMAT=json", "JETPOST_LOG_LEVEL=info")
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLine blocks until a stderr line contains s, or the process exits.
func (p *proc) waitLine(s string) {
	p.t.Helper()
	timeout := time.After(2 * time.Minute) // bounds a broken test only
	for {
		if strings.Contains(p.output(), s) {
			return
		}
		select {
		case <-p.seen:
		case <-p.done:
			if strings.Contains(p.output(), s) {
				return
			}
			p.t.Fatalf("process exited (%v) before printing %q", p.err, s)
		case <-timeout:
			p.t.Fatalf("no line containing %q within 2 minutes", s)
		}
	}
}

// wait returns the exit code.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(3 * time.Minute):
		p.t.Fatal("process did not exit within 3 minutes")
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatal(p.err)
	}
	return 0
}

// runEnqueue runs enqueue to completion and returns its exit code, stdout
// and stderr.
func runEnqueue(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "enqueue"), args...)
	cmd.Env = append(baseEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), errb.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errb.String()
}

// writeJobs writes n JSON Lines jobs aimed at url (path varies per job).
func writeJobs(t *testing.T, n int, url string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jobs.jsonl")
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"id":"job-%05d","method":"POST","url":"%s/items/%d","json":{"n":%d}}`+"\n", i, url, i, i)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// readResults parses an --out file and fails on a second result per id
// or a record that does not match the result schema.
func readResults(t *testing.T, path string) map[string]*job.Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res := map[string]*job.Result{}
	for i, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r job.Result
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("%s:%d: %v", path, i+1, err)
		}
		checkSchema(t, schemas.Result, line, fmt.Sprintf("%s:%d", path, i+1))
		if _, dup := res[r.ID]; dup {
			t.Errorf("second result for %s in %s", r.ID, path)
		}
		res[r.ID] = &r
	}
	return res
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
