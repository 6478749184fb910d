package enqueue

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/pkg/job"
)

// ProgressMode is how progress is shown.
type ProgressMode int

const (
	// ProgressQuiet shows nothing.
	ProgressQuiet ProgressMode = iota
	// ProgressBar draws a bar (stderr is a terminal).
	ProgressBar
	// ProgressLines writes a status line every few seconds (a log, a pipe).
	ProgressLines
)

// Progress shows how a batch goes: jobs published (or skipped: completed by
// an earlier run), results ok and failed, the rate and the time left. The counters
// are updated from any goroutine; a ticker draws them, so drawing never
// slows publishing. A nil *Progress counts nothing and shows nothing.
type Progress struct {
	mode  ProgressMode
	w     io.Writer
	total int64
	wait  bool // the bar follows results; otherwise publishes

	pub, done, ok, failed atomic.Int64
	cancelled             atomic.Int64
	breakers              *BreakerWatch // nil: not shown

	drawMu   sync.Mutex // the bar and printed lines share the terminal
	bar      *progressbar.ProgressBar
	every    time.Duration
	start    time.Time
	stop     chan struct{}
	finished sync.WaitGroup
	once     sync.Once
}

// NewProgress returns a Progress for total jobs; wait says results will be
// collected.
func NewProgress(w io.Writer, mode ProgressMode, total int, wait bool) *Progress {
	p := &Progress{mode: mode, w: w, total: int64(total), wait: wait, every: 5 * time.Second, stop: make(chan struct{})}
	if mode == ProgressBar {
		desc := "publishing"
		if wait {
			desc = "results"
		}
		p.bar = progressbar.NewOptions64(p.total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("jobs"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionUseANSICodes(true),
		)
	}
	return p
}

// ShowBreakers adds the breakers w sees open to the status; call it
// before Start.
func (p *Progress) ShowBreakers(w *BreakerWatch) {
	if p != nil {
		p.breakers = w
	}
}

// Start begins drawing.
func (p *Progress) Start() {
	if p == nil || p.mode == ProgressQuiet {
		return
	}
	p.start = time.Now()
	tick := 200 * time.Millisecond
	if p.mode == ProgressLines {
		tick = p.every
	}
	p.finished.Add(1)
	go func() {
		defer p.finished.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
}

func (p *Progress) published() {
	if p != nil {
		p.pub.Add(1)
	}
}

func (p *Progress) completedEarlier() {
	if p != nil {
		p.done.Add(1)
	}
}

// Outcome counts one result's outcome.
func (p *Progress) Outcome(ok bool) {
	if p == nil {
		return
	}
	if ok {
		p.ok.Add(1)
	} else {
		p.failed.Add(1)
	}
}

// Result counts one result: ok, failed, or cancelled (reason cancelled).
func (p *Progress) Result(ok bool, reason string) {
	if p != nil && !ok && reason == string(job.ReasonCancelled) {
		p.cancelled.Add(1)
		return
	}
	p.Outcome(ok)
}

// counts is one consistent reading of the counters.
type counts struct{ pub, done, ok, failed, cancelled int64 }

func (p *Progress) read() counts {
	return counts{p.pub.Load(), p.done.Load(), p.ok.Load(), p.failed.Load(), p.cancelled.Load()}
}

// current is what the bar measures.
func (p *Progress) current(c counts) int64 {
	if p.wait {
		return c.ok + c.failed + c.cancelled
	}
	return c.pub + c.done
}

func (p *Progress) status(c counts) string {
	s := fmt.Sprintf("published %d/%d", c.pub, p.total)
	if c.done > 0 {
		s += fmt.Sprintf(" (%d done before)", c.done)
	}
	if p.wait {
		s += fmt.Sprintf(", ok %d, failed %d", c.ok, c.failed)
		if c.cancelled > 0 {
			s += fmt.Sprintf(", cancelled %d", c.cancelled)
		}
	}
	if b := p.breakers.Line(); b != "" {
		s += "; " + b
	}
	return s
}

func (p *Progress) draw() {
	p.drawMu.Lock()
	defer p.drawMu.Unlock()
	c := p.read()
	cur := p.current(c)
	if p.bar != nil {
		p.bar.Describe(p.status(c))
		_ = p.bar.Set64(cur)
		return
	}
	elapsed := time.Since(p.start)
	line := "progress: " + p.status(c)
	if rate := float64(cur) / elapsed.Seconds(); cur > 0 && rate > 0 {
		line += fmt.Sprintf("; %.0f jobs/s", rate)
		if left := p.total - cur; left > 0 {
			line += ", ETA " + time.Duration(float64(left)/rate*float64(time.Second)).Round(time.Second).String()
		}
	}
	fmt.Fprintln(p.w, line)
}

// Printf writes a message to the progress output (whatever the mode),
// clearing the bar first so that the two do not mix on the terminal.
func (p *Progress) Printf(format string, args ...any) {
	p.drawMu.Lock()
	defer p.drawMu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	// Messages quote ids, hosts and errors: text from jobs and servers.
	fmt.Fprint(p.w, termsafe.Lines(fmt.Sprintf(format, args...)))
}

// Finish stops drawing; a bar is drawn a last time and ended with a new
// line.
func (p *Progress) Finish() {
	if p == nil || p.mode == ProgressQuiet {
		return
	}
	p.once.Do(func() {
		close(p.stop)
		p.finished.Wait()
		if p.bar != nil {
			p.drawMu.Lock()
			defer p.drawMu.Unlock()
			c := p.read()
			p.bar.Describe(p.status(c))
			_ = p.bar.Set64(p.current(c))
			fmt.Fprintln(p.w)
		}
	})
}
