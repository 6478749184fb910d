package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// line is one line a child wrote to stderr, with when it arrived.
type line struct {
	at   time.Time
	text string
}

// proc is a child process whose stderr is kept (bounded) with timestamps.
type proc struct {
	name  string
	cmd   *exec.Cmd
	start time.Time

	mu    sync.Mutex
	lines []line
	done  chan struct{}
	err   error
	end   time.Time
}

const maxLines = 2000

func startProc(name, bin string, args, env []string, stdout io.Writer) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	if stdout == nil {
		stdout = io.Discard
	}
	cmd.Stdout = stdout
	// Children die with the benchmark, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			if len(p.lines) < maxLines {
				p.lines = append(p.lines, line{time.Now(), sc.Text()})
			}
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		p.end = time.Now()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// output is the kept stderr, for error messages.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.lines {
		b.WriteString(l.text)
		b.WriteByte('\n')
	}
	return b.String()
}

// lineAt is when the first stderr line containing s arrived (zero if none).
func (p *proc) lineAt(s string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if strings.Contains(l.text, s) {
			return l.at
		}
	}
	return time.Time{}
}

// wait blocks until the process exits or ctx ends (then it is killed).
func (p *proc) wait(ctx context.Context) error {
	select {
	case <-p.done:
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s: %w", p.name, ctx.Err())
	}
	return p.err
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// rusage of an exited process: CPU time and peak RSS as the kernel counts
// them, child threads included.
func (p *proc) rusage() (cpu time.Duration, maxRSS int64) {
	ps := p.cmd.ProcessState
	if ps == nil {
		return 0, 0
	}
	cpu = ps.UserTime() + ps.SystemTime()
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		maxRSS = ru.Maxrss * 1024
	}
	return cpu, maxRSS
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times; 100 on every
// Linux the benchmark runs on.
const clockTick = 100

// procCPU reads a running process's CPU time (user + system) from
// /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields after it are
	// counted from the closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unexpected /proc stat format")
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// selfCPU is this process's CPU time so far; during a jetpost run the
// benchmark process does little besides serving the embedded NATS server.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitHTTP polls url until it answers 200, the process exits or ctx ends.
func waitHTTP(ctx context.Context, p *proc, url string) error {
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v) before %s answered:\n%s", p.name, p.err, url, p.output())
		case <-ctx.Done():
			return fmt.Errorf("%s: %s did not answer: %w\n%s", p.name, url, ctx.Err(), p.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// machineBusy is the CPU time every core has spent not idle since boot,
// from /proc/stat. Less the time of our own processes over a run, it says
// how much else the machine was doing (other people's builds, tests,
// benchmarks): figures taken next to a busy neighbour are not comparable.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(first)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTick
}
