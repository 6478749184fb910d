package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetpost/jetpost/bench/internal/benchkit"
	"github.com/jetpost/jetpost/internal/target"
)

// demoTarget is cmd/demotarget as a separate process: the raw client and
// the workers talk to the same server, and its CPU time is its own.
type demoTarget struct {
	p   *proc
	url string // http://127.0.0.1:PORT
}

func startTarget(ctx context.Context, binDir string, args ...string) (*demoTarget, error) {
	pr, pw := io.Pipe()
	args = append([]string{"-addr", "127.0.0.1:0"}, args...)
	p, err := startProc("demotarget", filepath.Join(binDir, "demotarget"), args, benchkit.CleanEnv(), pw)
	if err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "demotarget listening on "); ok {
				select {
				case addr <- u:
				default:
				}
			}
		}
	}()
	select {
	case u := <-addr:
		return &demoTarget{p: p, url: u}, nil
	case <-p.done:
		return nil, fmt.Errorf("demotarget exited: %v\n%s", p.err, p.output())
	case <-ctx.Done():
		p.stop(time.Second)
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		p.stop(time.Second)
		return nil, fmt.Errorf("demotarget did not start:\n%s", p.output())
	}
}

func (t *demoTarget) stats() (target.Stats, error) {
	var st target.Stats
	resp, err := http.Get(t.url + "/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

func (t *demoTarget) reset() error {
	resp, err := http.Post(t.url+"/reset", "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("reset: status %d", resp.StatusCode)
	}
	return nil
}

func (t *demoTarget) cpu() time.Duration {
	d, _ := procCPU(t.p.pid())
	return d
}

func (t *demoTarget) stop() { t.p.stop(10 * time.Second) }

// hangHost accepts TCP connections and never answers: a host that is up at
// the TCP level and hangs, the worst case for a sender that holds a slot per
// request until its timeout.
type hangHost struct {
	ln       net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func startHangHost() (*hangHost, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hangHost{ln: ln}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepted.Add(1)
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			// Read and drop whatever comes so the client is never blocked
			// on a full socket buffer; answer nothing.
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return h, nil
}

func (h *hangHost) url() string { return "http://" + h.ln.Addr().String() }

func (h *hangHost) stop() {
	_ = h.ln.Close()
	h.mu.Lock()
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}
