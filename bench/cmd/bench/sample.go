package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStatusBytes reads a "kB" field of /proc/PID/status (VmRSS, VmHWM)
// in bytes; pid 0 is this process.
func procStatusBytes(pid int, field string) (int64, error) {
	p := "/proc/self/status"
	if pid != 0 {
		p = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("%s not found", field)
}

// diskUse is what the files under dir occupy on disk (allocated blocks, not
// apparent sizes: the store preallocates and truncates its blocks).
func diskUse(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			// A block the server removed between listing and stat.
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total
}

// hwmWatch follows a child's peak resident set (VmHWM) while it runs:
// after it exits /proc no longer has it, and its rusage counts pages it
// shared with the benchmark between fork and exec.
type hwmWatch struct {
	done chan struct{}
	peak chan int64
}

func watchHWM(pid int, every time.Duration) *hwmWatch {
	w := &hwmWatch{done: make(chan struct{}), peak: make(chan int64, 1)}
	go func() {
		var peak int64
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if h, err := procStatusBytes(pid, "VmHWM"); err == nil {
				peak = max(peak, h)
			}
			select {
			case <-w.done:
				w.peak <- peak
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// stop ends the watch and returns the highest VmHWM seen.
func (w *hwmWatch) stop() int64 {
	close(w.done)
	return <-w.peak
}

// median of xs (0 if empty); xs is not changed.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// linearFit is the least-squares slope of y over x and the range of x it
// was fitted on; ok is false with fewer than two distinct x.
func linearFit(x, y []float64) (slope, span float64, ok bool) {
	n := float64(len(x))
	if len(x) < 2 || len(x) != len(y) {
		return 0, 0, false
	}
	var sx, sy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
	}
	mx, my := sx/n, sy/n
	var sxx, sxy float64
	for i := range x {
		sxx += (x[i] - mx) * (x[i] - mx)
		sxy += (x[i] - mx) * (y[i] - my)
	}
	if sxx == 0 {
		return 0, 0, false
	}
	return sxy / sxx, slices.Max(x) - slices.Min(x), true
}

// tenthRates splits times (sorted, one per result) into ten equal counts
// and returns each tenth's rate: its results ÷ the time from the previous
// tenth's last result (the first result, for the first tenth) to its own
// last. Fewer than 20 results give nil.
func tenthRates(times []int64) []float64 {
	n := len(times)
	if n < 20 {
		return nil
	}
	rates := make([]float64, 10)
	prev := 0
	for k := range 10 {
		end := (k + 1) * n / 10
		from, to := times[max(prev-1, 0)], times[end-1]
		count := end - prev
		if k == 0 {
			count-- // the first result starts the clock
		}
		if d := time.Duration(to - from).Seconds(); d > 0 {
			rates[k] = float64(count) / d
		}
		prev = end
	}
	return rates
}

// bitmap marks job indexes seen: a million results cost 125 kB, not a map
// of strings.
type bitmap []uint64

func newBitmap(n int) bitmap { return make(bitmap, (n+63)/64) }

// set marks i and reports whether it was marked already.
func (b bitmap) set(i int) (was bool) {
	w, m := i/64, uint64(1)<<(i%64)
	was = b[w]&m != 0
	b[w] |= m
	return was
}

// count is how many of the first n indexes are marked.
func (b bitmap) count(n int) int {
	c := 0
	for i := range n {
		if b[i/64]&(1<<(i%64)) != 0 {
			c++
		}
	}
	return c
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

// workerCounter sums a counter (every label set) over the workers'
// /metrics; a worker that does not answer counts nothing.
func workerCounter(ws []*workerProc, name string) float64 {
	var total float64
	c := &http.Client{Timeout: 5 * time.Second}
	for _, w := range ws {
		resp, err := c.Get("http://" + w.addr + "/metrics")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(body), "\n") {
			if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
				continue
			}
			if i := strings.LastIndexByte(l, ' '); i > 0 {
				v, _ := strconv.ParseFloat(l[i+1:], 64)
				total += v
			}
		}
	}
	return total
}
