package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/enqueue"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/worker"
	"github.com/jetpost/jetpost/internal/worker/daemon"
	"github.com/jetpost/jetpost/pkg/job"
	"github.com/jetpost/jetpost/pkg/sender"
)

// profile runs a scenario with the worker (built by daemon.Build, as
// cmd/worker builds it) and enqueue's own packages in this process, so that
// one CPU profile covers worker, enqueue and the embedded broker, and so
// that every queue operation of every job can be timed through thin
// wrappers of the jetstream handle, the sender and the handler. The target
// stays a separate process.
func (b *bench) profile(ctx context.Context, dir string, scenarios []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, s := range scenarios {
		var n, inflight int
		var lat time.Duration
		switch s {
		case "latency":
			n, inflight, lat = b.scaled(10000, 1000), 40, 50*time.Millisecond
		case "throughput":
			n, inflight, lat = b.scaled(50000, 5000), 256, 0
		default:
			b.logf("profile: skipping %s (only latency and throughput are profiled)", s)
			continue
		}
		if err := b.profileOne(ctx, dir, s, n, inflight, lat); err != nil {
			return fmt.Errorf("profile %s: %w", s, err)
		}
	}
	return nil
}

func (b *bench) profileOne(ctx context.Context, dir, name string, n, inflight int, lat time.Duration) error {
	tgt, err := startTarget(ctx, b.binDir, "-latency", lat.String())
	if err != nil {
		return err
	}
	defer tgt.stop()
	// Labels tell the three apart in the profile (go tool pprof
	// -tagfocus=component=worker); goroutines inherit them from the one
	// that started them, so the broker's connection handlers, the worker's
	// HTTP transport loops and the client libraries' readers all count
	// where they belong.
	var br *broker
	pprof.Do(ctx, pprof.Labels("component", "broker"), func(context.Context) { br, err = startBroker(b.tmp) })
	if err != nil {
		return err
	}
	defer br.stop()
	file, err := writeJobs(b.tmp, "prof-"+name, "p", tgt.url, n)
	if err != nil {
		return err
	}
	cfg, err := b.profileConfig(br.URL, inflight)
	if err != nil {
		return err
	}
	tl := newTimeline(n)
	stopWorker, err := startInprocWorker(ctx, cfg, tl)
	if err != nil {
		return err
	}
	m, err := profileEnqueue(ctx, filepath.Join(dir, name+".cpu.pprof"), br.URL, file, "prof"+name, n, tl)
	if err != nil {
		stopWorker()
		return err
	}
	if err := stopWorker(); err != nil {
		return err
	}
	st, _ := tgt.stats()
	if hf, err := os.Create(filepath.Join(dir, name+".allocs.pprof")); err == nil {
		_ = pprof.Lookup("allocs").WriteTo(hf, 0)
		hf.Close()
	}
	var out strings.Builder
	m.summary(&out, name, n, lat, cfg, st.MaxInFlight)
	// As in production, a handler runs for each request in flight and each
	// job waiting for its host: the timeline's slots are handlers.
	tl.report(&out, cfg.MaxInflight+cfg.HostWaiting(), m.wall)
	fmt.Print(out.String())
	if err := os.WriteFile(filepath.Join(dir, name+".txt"), []byte(out.String()), 0o644); err != nil {
		return err
	}
	b.logf("wrote %s and %s", filepath.Join(dir, name+".cpu.pprof"), filepath.Join(dir, name+".txt"))
	return nil
}

// profileConfig is the worker's configuration exactly as cmd/worker reads
// it, from the environment.
func (b *bench) profileConfig(natsURL string, inflight int) (*config.Worker, error) {
	env := append([]string{
		"JETPOST_NATS_URL=" + natsURL, "JETPOST_ALLOWED_NETWORKS=127.0.0.0/8", "JETPOST_LOG_LEVEL=warn",
		"JETPOST_MAX_INFLIGHT=" + strconv.Itoa(inflight),
	}, b.workerEnv...)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	cfg, err := config.LoadWorker()
	if err != nil {
		return nil, err
	}
	cfg.WorkerID = "prof-worker"
	return cfg, nil
}

// startInprocWorker runs the worker until stop, which returns how it ended.
func startInprocWorker(ctx context.Context, cfg *config.Worker, tl *timeline) (stop func() error, err error) {
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan struct{})
	go pprof.Do(wctx, pprof.Labels("component", "worker"), func(wctx context.Context) {
		done <- runInprocWorker(wctx, cfg, tl, ready)
	})
	select {
	case <-ready:
		return func() error { cancel(); return <-done }, nil
	case err := <-done:
		cancel()
		return nil, err
	}
}

// profMeasure is what one profiled batch measured in this process.
type profMeasure struct {
	wall, pubDone, cpu time.Duration
	ms0, ms1           runtime.MemStats
}

// profileEnqueue publishes and waits for a batch under the CPU profiler.
func profileEnqueue(ctx context.Context, cpuFile, natsURL, file, batch string, n int, tl *timeline) (profMeasure, error) {
	var m profMeasure
	f, err := os.Create(cpuFile)
	if err != nil {
		return m, err
	}
	defer f.Close()
	runtime.ReadMemStats(&m.ms0)
	cpu0 := selfCPU()
	if err := pprof.StartCPUProfile(f); err != nil {
		return m, err
	}
	start := time.Now()
	tl.start = start
	pprof.Do(ctx, pprof.Labels("component", "enqueue"), func(ctx context.Context) {
		m.pubDone, err = inprocEnqueue(ctx, natsURL, file, batch, n)
	})
	m.wall = time.Since(start)
	pprof.StopCPUProfile()
	m.cpu = selfCPU() - cpu0
	runtime.ReadMemStats(&m.ms1)
	return m, err
}

func (m profMeasure) summary(out io.Writer, name string, n int, lat time.Duration, cfg *config.Worker, targetPeak int64) {
	fmt.Fprintf(out, "profile %s: %d jobs, %v target, %d in flight (%d handlers), prefetch %d: wall %.2fs (%.0f jobs/s), all published after %s\n",
		name, n, lat, cfg.MaxInflight, cfg.MaxInflight+cfg.HostWaiting(), cfg.EffectivePrefetch(), m.wall.Seconds(), float64(n)/m.wall.Seconds(), ms(m.pubDone))
	if lat > 0 {
		ideal := time.Duration(n) * lat / time.Duration(cfg.MaxInflight)
		fmt.Fprintf(out, "  ideal N·L/P %.2fs: %.3f×\n", ideal.Seconds(), m.wall.Seconds()/ideal.Seconds())
	}
	fmt.Fprintf(out, "  process CPU (worker + enqueue + broker in one) %s/job; GC cycles %d, %.1f KB allocated/job, target CPU %s/req, target max in flight %d\n",
		us(m.cpu, n), m.ms1.NumGC-m.ms0.NumGC, float64(m.ms1.TotalAlloc-m.ms0.TotalAlloc)/1024/float64(n), us(0, 0), targetPeak)
}

// runInprocWorker runs the worker daemon.Build makes, as cmd/worker does,
// with the jetstream handle, the sender and the handler wrapped for timing.
func runInprocWorker(ctx context.Context, cfg *config.Worker, tl *timeline, ready chan<- struct{}) error {
	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel)
	nc, err := nats.Connect(cfg.NatsURL, nats.Name("jetpost-worker prof"))
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := daemon.Build(ctx, cfg, nc, daemon.Options{
		Log:           log,
		WrapJetStream: func(js jetstream.JetStream) jetstream.JetStream { return &timedJS{JetStream: js, tl: tl} },
		WrapSender:    func(s worker.Sender) worker.Sender { return &timedSender{Sender: s, tl: tl} },
	})
	if err != nil {
		return err
	}
	svc.Consumer = &timedHandlers{Consumer: svc.Consumer, tl: tl}
	close(ready)
	return svc.Run(ctx)
}

// timedHandlers times each delivery's handler.
type timedHandlers struct {
	worker.Consumer
	tl *timeline
}

func (c *timedHandlers) Run(ctx context.Context, h queue.Handler) error {
	return c.Consumer.Run(ctx, func(ctx context.Context, d *queue.Delivery) queue.Decision {
		r := c.tl.get(d.Seq)
		r.handlerStart = time.Now()
		if d.Job != nil {
			c.tl.bindID(d.Job.ID, r)
		}
		dec := h(ctx, d)
		r.handlerEnd = time.Now()
		return dec
	})
}

// inprocEnqueue is cmd/enqueue's publish-and-wait path: validate, publish
// asynchronously with a 4096 window, collect results from the stream.
func inprocEnqueue(ctx context.Context, url, file, batch string, n int) (pubDone time.Duration, err error) {
	start := time.Now()
	nc, err := nats.Connect(url, nats.Name("jetpost-enqueue prof"))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	const window = 4096
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(window))
	if err != nil {
		return 0, err
	}
	ins, err := enqueue.OpenInputs([]string{file}, nil)
	if err != nil {
		return 0, err
	}
	if v, err := enqueue.Validate(ins); err != nil || v.Valid != n {
		return 0, fmt.Errorf("validation: %d valid, %v", v.Valid, err)
	}
	col := enqueue.NewCollector()
	wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	waitErr := make(chan error, 1)
	go func() { waitErr <- col.Run(wctx, js, names, batch) }()
	pub := queue.NewPublisher(js, names, window, func(id string, dup bool, err error) {
		if err == nil && !dup {
			col.Expect(id)
		}
	})
	now := time.Now().UTC()
	for _, in := range ins {
		if err := in.Each(func(j *job.Job) error {
			j.Batch, j.EnqueuedAt = batch, now
			return pub.Publish(ctx, j)
		}, nil); err != nil {
			return 0, err
		}
	}
	st := pub.Close()
	pubDone = time.Since(start)
	col.Seal()
	if st.Published != n {
		return pubDone, fmt.Errorf("published %d of %d", st.Published, n)
	}
	return pubDone, <-waitErr
}

// rec is one job's timeline inside the worker.
type rec struct {
	fetchCall    time.Time // the Fetch call whose batch brought it
	fetched      time.Time // handed over by the client library
	handlerStart time.Time
	sendStart    time.Time
	sendEnd      time.Time
	handlerEnd   time.Time
	pubStart     time.Time
	pubEnd       time.Time
	ackEnd       time.Time
}

type timeline struct {
	start time.Time
	mu    sync.Mutex
	bySeq map[uint64]*rec
	byID  map[string]*rec

	fetchMu    sync.Mutex
	fetches    int
	fetchAsked int
	fetchGot   int
	firstMsg   []time.Duration // Fetch call → first message
}

func newTimeline(n int) *timeline {
	return &timeline{bySeq: make(map[uint64]*rec, n), byID: make(map[string]*rec, n)}
}

func (t *timeline) get(seq uint64) *rec {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.bySeq[seq]
	if r == nil {
		r = &rec{}
		t.bySeq[seq] = r
	}
	return r
}

func (t *timeline) bindID(id string, r *rec) {
	t.mu.Lock()
	t.byID[id] = r
	t.mu.Unlock()
}

func (t *timeline) byJob(id string) *rec {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

// timedJS times result publishes and wraps the consumer for fetches.
type timedJS struct {
	jetstream.JetStream
	tl *timeline
}

func (j *timedJS) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	t0 := time.Now()
	ack, err := j.JetStream.PublishMsg(ctx, msg, opts...)
	if id := msg.Header.Get(jetstream.MsgIDHeader); id != "" && strings.Contains(msg.Subject, ".results.") {
		_, jid, _ := strings.Cut(id, "/")
		if r := j.tl.byJob(jid); r != nil {
			r.pubStart, r.pubEnd = t0, time.Now()
		}
	}
	return ack, err
}

func (j *timedJS) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := j.JetStream.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, err
	}
	return &timedConsumer{Consumer: c, tl: j.tl}, nil
}

type timedConsumer struct {
	jetstream.Consumer
	tl *timeline
}

func (c *timedConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	t0 := time.Now()
	mb, err := c.Consumer.Fetch(n, opts...)
	if err != nil {
		return mb, err
	}
	tb := &timedBatch{inner: mb, ch: make(chan jetstream.Msg, n)}
	go func() {
		defer close(tb.ch)
		got := 0
		for m := range mb.Messages() {
			now := time.Now()
			if got == 0 {
				c.tl.fetchMu.Lock()
				c.tl.firstMsg = append(c.tl.firstMsg, now.Sub(t0))
				c.tl.fetchMu.Unlock()
			}
			got++
			tm := &timedMsg{Msg: m, tl: c.tl}
			if md, err := m.Metadata(); err == nil {
				tm.r = c.tl.get(md.Sequence.Stream)
				tm.r.fetchCall, tm.r.fetched = t0, now
			}
			tb.ch <- tm
		}
		c.tl.fetchMu.Lock()
		c.tl.fetches++
		c.tl.fetchAsked += n
		c.tl.fetchGot += got
		c.tl.fetchMu.Unlock()
	}()
	return tb, nil
}

type timedBatch struct {
	inner jetstream.MessageBatch
	ch    chan jetstream.Msg
}

func (b *timedBatch) Messages() <-chan jetstream.Msg { return b.ch }
func (b *timedBatch) Error() error                   { return b.inner.Error() }

type timedMsg struct {
	jetstream.Msg
	tl *timeline
	r  *rec
}

func (m *timedMsg) Ack() error {
	err := m.Msg.Ack()
	m.acked()
	return err
}

// DoubleAck is how the consumer settles a job.
func (m *timedMsg) DoubleAck(ctx context.Context) error {
	err := m.Msg.DoubleAck(ctx)
	m.acked()
	return err
}

func (m *timedMsg) acked() {
	if m.r != nil {
		m.r.ackEnd = time.Now()
	}
}

type timedSender struct {
	worker.Sender
	tl *timeline
}

func (s *timedSender) SendUntil(ctx context.Context, j *job.Job, halt context.Context) sender.Outcome {
	r := s.tl.byJob(j.ID)
	t0 := time.Now()
	o := s.Sender.SendUntil(ctx, j, halt)
	if r != nil {
		r.sendStart, r.sendEnd = t0, time.Now()
	}
	return o
}

// report turns the timelines into where each slot's time went.
func (t *timeline) report(w io.Writer, slots int, wall time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var recs []*rec
	for _, r := range t.bySeq {
		if !r.ackEnd.IsZero() && !r.handlerStart.IsZero() {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		fmt.Fprintln(w, "  no complete timelines")
		return
	}
	var wait, http, handler, pub, ack, busy, total []time.Duration
	for _, r := range recs {
		wait = append(wait, r.handlerStart.Sub(r.fetched))
		http = append(http, r.sendEnd.Sub(r.sendStart))
		handler = append(handler, r.handlerEnd.Sub(r.handlerStart)-r.sendEnd.Sub(r.sendStart))
		pub = append(pub, r.pubEnd.Sub(r.pubStart))
		ack = append(ack, r.ackEnd.Sub(r.handlerEnd)-r.pubEnd.Sub(r.pubStart))
		busy = append(busy, r.ackEnd.Sub(r.handlerStart))
		total = append(total, r.ackEnd.Sub(r.fetchCall))
	}
	n := len(recs)
	sum := func(ds []time.Duration) time.Duration {
		var s time.Duration
		for _, d := range ds {
			s += d
		}
		return s
	}
	line := func(name string, ds []time.Duration, what string) {
		s := append([]time.Duration(nil), ds...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		fmt.Fprintf(w, "  %-28s mean %8.3f ms  p50 %8.3f  p99 %8.3f  max %8.3f   %s\n", name,
			float64(sum(s).Microseconds())/float64(n)/1000, msf(s[n/2]), msf(s[n*99/100]), msf(s[n-1]), what)
	}
	fmt.Fprintf(w, "  per job (%d complete timelines):\n", n)
	line("window wait", wait, "fetched → handler start (waiting for a slot)")
	line("sender.Send", http, "waiting for the host's limits and a place, then the HTTP attempt")
	line("handler besides HTTP", handler, "worker.Handle minus Send (result, callback, logs, metrics)")
	line("result publish", pub, "js.PublishMsg round trip, slot held")
	line("rest of settle + ack", ack, "handler end → Ack returned, minus the publish")
	line("slot busy", busy, "handler start → Ack returned")
	line("fetch call → acked", total, "")

	// Where slot-time went over the run.
	capacity := time.Duration(slots) * wall
	busyAll := sum(busy)
	fmt.Fprintf(w, "  slot-time: capacity %d × %.2fs = %.1f slot-s; busy %.1f slot-s (%.1f%%): HTTP %.1f%%, handler rest %.1f%%, result publish %.1f%%, settle rest %.1f%%; idle %.1f%%\n",
		slots, wall.Seconds(), capacity.Seconds(), busyAll.Seconds(), pct(busyAll, capacity),
		pct(sum(http), capacity), pct(sum(handler), capacity), pct(sum(pub), capacity), pct(sum(ack), capacity),
		100-pct(busyAll, capacity))

	idleReport(w, recs, slots, t.start, wall)
	t.fetchReport(w)
}

// idleReport splits idle slots by cause: nothing fetched to start, or a
// fetched job not yet started (hand-over latency).
func idleReport(w io.Writer, recs []*rec, slots int, start time.Time, wall time.Duration) {
	type ev struct {
		at        time.Time
		dBusy, dQ int
	}
	var evs []ev
	var firstStart, lastAck time.Time
	for _, r := range recs {
		evs = append(evs, ev{r.fetched, 0, 1}, ev{r.handlerStart, 1, -1}, ev{r.ackEnd, -1, 0})
		if firstStart.IsZero() || r.handlerStart.Before(firstStart) {
			firstStart = r.handlerStart
		}
		if r.ackEnd.After(lastAck) {
			lastAck = r.ackEnd
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	var busyN, queued int
	var starved, handover, full time.Duration
	prev := firstStart
	for _, e := range evs {
		if e.at.After(prev) && !e.at.Before(firstStart) {
			d := e.at.Sub(prev)
			idle := time.Duration(slots-busyN) * d
			switch {
			case busyN >= slots:
				full += d
			case queued == 0:
				starved += idle
			default:
				handover += time.Duration(min(slots-busyN, queued)) * d
				starved += time.Duration(max(0, slots-busyN-queued)) * d
			}
			prev = e.at
		}
		busyN += e.dBusy
		queued += e.dQ
	}
	fmt.Fprintf(w, "  before the first job started: %s (enqueue startup, first fetch); after the last ack: %s (collection, exit)\n",
		ms(firstStart.Sub(start)), ms(start.Add(wall).Sub(lastAck)))
	fmt.Fprintf(w, "  between first start and last ack: all %d slots busy %.1f%% of the time; idle slot-s with the window empty %.2f, with jobs fetched but not started %.2f\n",
		slots, pct(full, lastAck.Sub(firstStart)), starved.Seconds(), handover.Seconds())
}

func (t *timeline) fetchReport(w io.Writer) {
	t.fetchMu.Lock()
	defer t.fetchMu.Unlock()
	if t.fetches > 0 {
		sort.Slice(t.firstMsg, func(i, j int) bool { return t.firstMsg[i] < t.firstMsg[j] })
		fmt.Fprintf(w, "  fetches: %d, asked %.1f messages each, got %.1f; Fetch call → first message p50 %.3f ms p99 %.3f ms\n",
			t.fetches, float64(t.fetchAsked)/float64(t.fetches), float64(t.fetchGot)/float64(t.fetches),
			msf(t.firstMsg[len(t.firstMsg)/2]), msf(t.firstMsg[len(t.firstMsg)*99/100]))
	}
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return 100 * a.Seconds() / b.Seconds()
}
