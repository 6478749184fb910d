package sender

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetpost/jetpost/pkg/job"
)

// fakeAdmission records what Send asked and was told; refuse, when set,
// decides the answer. Requests of batch "rated" take a rate token, and a
// 429 asking for a pace gets pace.
type fakeAdmission struct {
	refuse func(r AdmitRequest) error
	pace   time.Duration

	mu       sync.Mutex
	asked    []AdmitRequest
	feedback []Feedback
	paced    []string // hosts asked for a pace
}

func (f *fakeAdmission) Admit(_ context.Context, r AdmitRequest) (*Permit, error) {
	f.mu.Lock()
	f.asked = append(f.asked, r)
	f.mu.Unlock()
	if f.refuse != nil {
		if err := f.refuse(r); err != nil {
			return nil, err
		}
	}
	return NewPermit(r.Batch == "rated", func(fb Feedback) time.Duration {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.feedback = append(f.feedback, fb)
		if !fb.WantPace {
			return 0
		}
		f.paced = append(f.paced, r.Host)
		return f.pace
	}), nil
}

func TestNotAdmittedIsDeferWithoutARequest(t *testing.T) {
	srv, hits := serve(t, func(w http.ResponseWriter, _ *http.Request) {})
	adm := &fakeAdmission{refuse: func(r AdmitRequest) error {
		return &NotAdmittedError{Host: r.Host, Reason: "concurrency limit 3 reached", Wait: 1500 * time.Millisecond}
	}}
	s := newSender(t, Config{AllowedNetworks: loopback(), Admission: adm})
	j := newJob(srv.URL + "/x")
	j.Rate = 25
	o := s.Send(safetyNet(t), j)
	if o.Class != Postponed || o.Attempted || o.RetryAfter != 1500*time.Millisecond {
		t.Fatalf("outcome %v attempted=%v retry after %v; want defer, not attempted, 1.5s", o.Class, o.Attempted, o.RetryAfter)
	}
	var na *NotAdmittedError
	if !errors.As(o.Err, &na) || !strings.Contains(o.Err.Error(), "not sent") {
		t.Fatalf("error %v: want a wrapped *NotAdmittedError saying nothing was sent", o.Err)
	}
	if hits.Load() != 0 {
		t.Fatalf("target received %d requests", hits.Load())
	}
	u, _ := url.Parse(srv.URL)
	want := AdmitRequest{Host: "127.0.0.1:" + u.Port(), Batch: "b", BatchRate: 25}
	if len(adm.asked) != 1 || adm.asked[0] != want {
		t.Fatalf("asked %+v, want %+v", adm.asked, want)
	}
	// The breaker saw nothing: refusals are not failures.
	if st := s.BreakerStates(); len(st) != 0 {
		t.Fatalf("breaker touched by a refusal: %v", st)
	}
}

func TestAdmissionOtherErrorsDeferWithDefaultWait(t *testing.T) {
	srv, hits := serve(t, func(w http.ResponseWriter, _ *http.Request) {})
	adm := &fakeAdmission{refuse: func(AdmitRequest) error { return errors.New("limiter broken") }}
	s := newSender(t, Config{AllowedNetworks: loopback(), Admission: adm})
	o := s.Send(safetyNet(t), newJob(srv.URL))
	if o.Class != Postponed || o.Attempted || o.RetryAfter != defaultAdmitWait || hits.Load() != 0 {
		t.Fatalf("outcome %+v, %d requests; want defer after %v, nothing sent", o, hits.Load(), defaultAdmitWait)
	}
}

func TestAdmittedRequestsReportBack(t *testing.T) {
	arrived := make(chan struct{}, 1)
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hold":
			arrived <- struct{}{}
			<-r.Context().Done()
		case "/429":
			w.WriteHeader(http.StatusTooManyRequests)
		case "/503":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	})
	adm := &fakeAdmission{}
	s := newSender(t, Config{AllowedNetworks: loopback(), Admission: adm})
	ctx := safetyNet(t)
	for _, path := range []string{"/ok", "/429", "/503"} {
		s.Send(ctx, newJob(srv.URL+path))
	}
	slow := newJob(srv.URL + "/slow")
	slow.Timeout = 50_000_000 // 50ms
	s.Send(ctx, slow)
	cctx, cancel := context.WithCancel(ctx)
	go func() { <-arrived; cancel() }() // shutdown while the request is out
	s.Send(cctx, newJob(srv.URL+"/hold"))

	if len(adm.feedback) != 5 {
		t.Fatalf("%d feedbacks for 5 admitted requests", len(adm.feedback))
	}
	for i, want := range []struct {
		status             int
		overloaded, cancel bool
	}{{200, false, false}, {429, true, false}, {503, true, false}, {0, true, false}, {0, false, true}} {
		fb := adm.feedback[i]
		if !fb.Sent || fb.Status != want.status || fb.Overloaded() != want.overloaded || fb.Canceled != want.cancel {
			t.Errorf("feedback %d = %+v (overloaded %v), want status %d overloaded %v canceled %v",
				i, fb, fb.Overloaded(), want.status, want.overloaded, want.cancel)
		}
		if fb.Latency <= 0 {
			t.Errorf("feedback %d has no latency", i)
		}
	}
	if !adm.feedback[3].TimedOut {
		t.Errorf("the attempt that ran out of time is not marked TimedOut: %+v", adm.feedback[3])
	}
}

// A breaker that opens while a request waits for admission turns it away
// after it was admitted: its slot is released as not sent.
func TestBreakerRefusalAfterAdmissionFreesTheSlot(t *testing.T) {
	srv, _ := serve(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	ctx := safetyNet(t)
	var s *Sender
	adm := &fakeAdmission{refuse: func(r AdmitRequest) error {
		if r.Batch == "waits" {
			s.Send(ctx, newJob(srv.URL)) // opens the breaker meanwhile
		}
		return nil
	}}
	s = newSender(t, Config{AllowedNetworks: loopback(), Admission: adm,
		Breaker: Breaker{Failures: 1, OpenTimeout: time.Minute}})
	j := newJob(srv.URL)
	j.Batch = "waits"
	o := s.Send(ctx, j)
	var open *BreakerOpenError
	if o.Class != Postponed || o.Attempted || !errors.As(o.Err, &open) {
		t.Fatalf("send %v (%v): want turned away by the breaker that opened", o.Class, o.Err)
	}
	if len(adm.feedback) != 2 || adm.feedback[1].Sent || adm.feedback[1].Overloaded() {
		t.Fatalf("feedback %+v: the breaker's refusal must release the slot as not sent", adm.feedback)
	}
}

// A request for a host whose breaker is open is turned away before it asks
// for the host's capacity: it takes no admission slot and does not wait
// for one, however full the host is.
func TestOpenBreakerTurnsAwayBeforeAdmission(t *testing.T) {
	srv, hits := serve(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	var full atomic.Bool
	adm := &fakeAdmission{refuse: func(r AdmitRequest) error {
		if full.Load() {
			return &NotAdmittedError{Host: r.Host, Reason: "concurrency limit 1 reached", Wait: time.Second, AtCeiling: true}
		}
		return nil
	}}
	s := newSender(t, Config{AllowedNetworks: loopback(), Admission: adm,
		Breaker: Breaker{Failures: 1, OpenTimeout: time.Minute}})
	ctx := safetyNet(t)
	s.Send(ctx, newJob(srv.URL)) // opens the breaker
	full.Store(true)
	o := s.Send(ctx, newJob(srv.URL))
	var open *BreakerOpenError
	if o.Class != Postponed || o.Attempted || !errors.As(o.Err, &open) || open.State != job.BreakerOpen {
		t.Fatalf("send %v (%v): want turned away by the open breaker", o.Class, o.Err)
	}
	if OwnCapacity(o.Err) {
		t.Fatal("a turn-away by the breaker reads as a want of the worker's own room")
	}
	if len(adm.asked) != 1 || hits.Load() != 1 {
		t.Fatalf("admission asked %d times, target hit %d times; want 1 and 1 (the opener's)", len(adm.asked), hits.Load())
	}
}

// A callback asks the host limits like a job, under its job's batch rate:
// turned away, it is Postponed with the limits' wait and sends nothing;
// admitted, it is sent and its permit learns how it went.
func TestCallbacksGoThroughAdmission(t *testing.T) {
	srv, hits := serve(t, func(w http.ResponseWriter, _ *http.Request) {})
	var refuse atomic.Bool
	refuse.Store(true)
	adm := &fakeAdmission{refuse: func(r AdmitRequest) error {
		if refuse.Load() {
			return &NotAdmittedError{Host: r.Host, Reason: "rate limit 1/s reached", Wait: 700 * time.Millisecond}
		}
		return nil
	}}
	s := newSender(t, Config{AllowedNetworks: loopback(), Admission: adm})
	cb := Callback{URL: srv.URL + "/hook", Body: []byte(`{}`), Key: "k", Batch: "b", BatchRate: 3}
	o := s.Post(safetyNet(t), cb)
	var na *NotAdmittedError
	if o.Class != Postponed || o.Attempted || o.RetryAfter != 700*time.Millisecond || !errors.As(o.Err, &na) || hits.Load() != 0 {
		t.Fatalf("refused callback: %v attempted=%v after %v (%v), %d requests; want postponed, nothing sent",
			o.Class, o.Attempted, o.RetryAfter, o.Err, hits.Load())
	}
	refuse.Store(false)
	if o := s.Post(safetyNet(t), cb); o.Class != Succeeded || hits.Load() != 1 {
		t.Fatalf("admitted callback: %v %v, %d requests", o.Class, o.Err, hits.Load())
	}
	u, _ := url.Parse(srv.URL)
	want := AdmitRequest{Host: "127.0.0.1:" + u.Port(), Batch: "b", BatchRate: 3}
	if len(adm.asked) != 2 || adm.asked[0] != want || adm.asked[1] != want {
		t.Errorf("asked %+v; want twice %+v", adm.asked, want)
	}
	if len(adm.feedback) != 1 || !adm.feedback[0].Sent || adm.feedback[0].Status != http.StatusOK {
		t.Errorf("feedback %+v: the admitted callback's permit must learn its answer", adm.feedback)
	}
}

// MaxRequests bounds what reaches targets, jobs and callbacks together;
// the rest queue for a place.
func TestMaxRequestsBoundsRequestsInFlight(t *testing.T) {
	release := make(chan struct{})
	var inflight, peak atomic.Int64
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		inflight.Add(-1)
	})
	s := newSender(t, Config{AllowedNetworks: loopback(), MaxRequests: 2, Admission: &fakeAdmission{}})
	ctx := safetyNet(t)
	var wg sync.WaitGroup
	outcomes := make(chan Outcome, 5)
	for i := range 5 {
		wg.Go(func() {
			if i%2 == 0 {
				outcomes <- s.Post(ctx, Callback{URL: srv.URL + "/callback", Body: []byte(`{}`), Key: "k"})
				return
			}
			outcomes <- s.Send(ctx, newJob(srv.URL+"/job"))
		})
	}
	// Two at the target, three queued for a place.
	for hits.Load() < 2 || s.Queued() < 3 {
		if ctx.Err() != nil {
			t.Fatalf("%d requests at the target, %d queued; want 2 and 3", hits.Load(), s.Queued())
		}
		runtime.Gosched()
	}
	if hits.Load() != 2 {
		t.Fatalf("%d requests reached the target with MaxRequests 2", hits.Load())
	}
	close(release)
	wg.Wait()
	close(outcomes)
	for o := range outcomes {
		if o.Class != Succeeded {
			t.Errorf("outcome %v: %v", o.Class, o.Err)
		}
	}
	if peak.Load() != 2 || hits.Load() != 5 || s.Queued() != 0 {
		t.Fatalf("peak %d, %d requests, %d still queued; want 2, 5, 0", peak.Load(), hits.Load(), s.Queued())
	}
}

// A job waiting in Admission for its host's capacity holds no place: the
// only place goes to a job whose host has room.
func TestWaitingInAdmissionHoldsNoPlace(t *testing.T) {
	srv, _ := serve(t, func(w http.ResponseWriter, _ *http.Request) {})
	asked, unblock := make(chan struct{}), make(chan struct{})
	adm := &fakeAdmission{refuse: func(r AdmitRequest) error {
		if r.Batch == "busy" {
			close(asked)
			<-unblock
		}
		return nil
	}}
	s := newSender(t, Config{AllowedNetworks: loopback(), MaxRequests: 1, Admission: adm})
	ctx := safetyNet(t)
	busy := newJob(srv.URL + "/busy")
	busy.Batch = "busy"
	done := make(chan Outcome, 1)
	go func() { done <- s.Send(ctx, busy) }()
	<-asked
	if o := s.Send(ctx, newJob(srv.URL+"/free")); o.Class != Succeeded {
		t.Fatalf("job for a host with room: %v (%v); the waiting job must not hold the place", o.Class, o.Err)
	}
	close(unblock)
	if o := <-done; o.Class != Succeeded {
		t.Fatalf("the job that waited: %v (%v)", o.Class, o.Err)
	}
}

// Shutdown while queued for a place: nothing sent, the admission's slot
// freed, the job handed back as a Defer.
func TestQueuedForAPlaceShutdown(t *testing.T) {
	release := make(chan struct{})
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	adm := &fakeAdmission{}
	s := newSender(t, Config{AllowedNetworks: loopback(), MaxRequests: 1, Admission: adm})
	ctx := safetyNet(t)
	go s.Send(ctx, newJob(srv.URL+"/first"))
	for hits.Load() < 1 && ctx.Err() == nil {
		runtime.Gosched()
	}
	qctx, cancel := context.WithCancel(ctx)
	done := make(chan Outcome, 1)
	go func() { done <- s.Send(qctx, newJob(srv.URL+"/second")) }()
	for s.Queued() < 1 && ctx.Err() == nil {
		runtime.Gosched()
	}
	cancel()
	o := <-done
	if o.Class != Postponed || o.Attempted || !strings.Contains(o.Err.Error(), "not sent") {
		t.Fatalf("outcome %+v: want a Defer, not sent", o)
	}
	adm.mu.Lock()
	defer adm.mu.Unlock()
	if len(adm.feedback) != 1 || adm.feedback[0].Sent {
		t.Fatalf("feedback %+v: the queued job's admission must be released as not sent", adm.feedback)
	}
}

// A 429 without Retry-After is retried at the pace its permit answers; the
// target's own Retry-After wins, and other retried statuses keep the
// caller's backoff.
func TestPermitPacesA429Retry(t *testing.T) {
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/429":
			w.WriteHeader(http.StatusTooManyRequests)
		case "/429-retry-after":
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
		case "/503":
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	p := &fakeAdmission{pace: 1234 * time.Millisecond}
	s := newSender(t, Config{AllowedNetworks: loopback(), Admission: p})
	ctx := safetyNet(t)
	for path, want := range map[string]time.Duration{"/429": 1234 * time.Millisecond, "/429-retry-after": 7 * time.Second, "/503": 0} {
		if o := s.Send(ctx, newJob(srv.URL+path)); o.Class != Retryable || o.RetryAfter != want {
			t.Errorf("%s: %v after %v, want a retry after %v", path, o.Class, o.RetryAfter, want)
		}
	}
	u, _ := url.Parse(srv.URL)
	if len(p.paced) != 1 || p.paced[0] != "127.0.0.1:"+u.Port() {
		t.Errorf("paced hosts %v: want the one 429 without Retry-After, by its admission key", p.paced)
	}
	// A callback is admitted like a job, and paced alike.
	if o := s.Post(ctx, Callback{URL: srv.URL + "/429", Body: []byte(`{}`), Key: "k"}); o.Class != Retryable || o.RetryAfter != 1234*time.Millisecond {
		t.Errorf("callback 429: %v after %v, want a retry at the host's pace", o.Class, o.RetryAfter)
	}
}

// A rate-limited request that waited too long for a place after taking its
// token is deferred, its token lost, rather than sent late with others.
func TestRateLimitedRequestWithAStaleTokenIsDeferred(t *testing.T) {
	release := make(chan struct{})
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	})
	adm := &fakeAdmission{}
	s := newSender(t, Config{AllowedNetworks: loopback(), MaxRequests: 1, Admission: adm})
	s.tokenAge = 0 // any wait for a place makes a token stale
	ctx := safetyNet(t)
	held := make(chan Outcome, 1)
	go func() { held <- s.Send(ctx, newJob(srv.URL+"/hold")) }()
	for hits.Load() < 1 && ctx.Err() == nil {
		runtime.Gosched()
	}
	rated, plain := newJob(srv.URL+"/rated"), newJob(srv.URL+"/plain")
	rated.Batch = "rated"
	done := make(chan Outcome, 2)
	go func() { done <- s.Send(ctx, rated) }()
	go func() { done <- s.Send(ctx, plain) }()
	for s.Queued() < 2 && ctx.Err() == nil {
		runtime.Gosched()
	}
	close(release)
	<-held
	var kinds []Class
	for range 2 {
		kinds = append(kinds, (<-done).Class)
	}
	slices.Sort(kinds)
	if !slices.Equal(kinds, []Class{Succeeded, Postponed}) || hits.Load() != 2 {
		t.Fatalf("outcomes %v, %d requests: want the plain job sent and the rated one deferred", kinds, hits.Load())
	}
	adm.mu.Lock()
	defer adm.mu.Unlock()
	notSent := 0
	for _, fb := range adm.feedback {
		if !fb.Sent {
			notSent++
		}
	}
	if notSent != 1 {
		t.Fatalf("feedback %+v: the deferred job's admission must be released as not sent", adm.feedback)
	}
}

// A permit passes on its first feedback only; a nil permit (a callback's)
// takes any.
func TestPermitDoneOnce(t *testing.T) {
	calls := 0
	p := NewPermit(false, func(fb Feedback) time.Duration {
		calls++
		return time.Duration(fb.Status)
	})
	if d := p.Done(Feedback{Sent: true, Status: 429, WantPace: true}); d != 429 {
		t.Fatalf("first Done answered %v, want what the admission said", d)
	}
	if d := p.Done(Feedback{Sent: true, Status: 500}); d != 0 || calls != 1 {
		t.Fatalf("second Done answered %v after %d calls: want 0, one call", d, calls)
	}
	var none *Permit
	if d := none.Done(Feedback{Sent: true}); d != 0 {
		t.Fatalf("nil permit answered %v", d)
	}
}

// blockingAdmission holds every request until its context ends, as a host
// at its limit does; entered is told when one waits.
type blockingAdmission struct{ entered chan struct{} }

func (b blockingAdmission) Admit(ctx context.Context, _ AdmitRequest) (*Permit, error) {
	b.entered <- struct{}{}
	<-ctx.Done()
	return nil, context.Cause(ctx)
}

// TestHaltEndsTheWaitForAdmission: a request waiting for its host's
// admission when its halt context ends (its batch paused or cancelled) is
// not sent, and says why; without a halt the same wait goes on.
func TestHaltEndsTheWaitForAdmission(t *testing.T) {
	srv, hits := serve(t, func(w http.ResponseWriter, _ *http.Request) {})
	adm := blockingAdmission{entered: make(chan struct{}, 1)}
	s := newSender(t, Config{AllowedNetworks: loopback(), Admission: adm})
	halt, stop := context.WithCancel(context.Background())
	go func() { <-adm.entered; stop() }()
	o := s.SendUntil(safetyNet(t), newJob(srv.URL+"/x"), halt)
	if o.Class != Postponed || o.Attempted || !errors.Is(o.Err, ErrHalted) {
		t.Fatalf("outcome %v attempted=%v err %v; want postponed, not attempted, ErrHalted", o.Class, o.Attempted, o.Err)
	}
	if o := s.SendUntil(safetyNet(t), newJob(srv.URL+"/x"), halt); !errors.Is(o.Err, ErrHalted) {
		t.Fatalf("already halted: %v, want ErrHalted without asking", o.Err)
	}
	if hits.Load() != 0 {
		t.Fatalf("target received %d requests", hits.Load())
	}
}
