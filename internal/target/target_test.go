package target_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/target"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// do sends one request and returns status, headers and body. key "" sends no
// Idempotency-Key.
func do(t *testing.T, c *http.Client, method, url, key, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func newServer(t *testing.T, opts target.Options) (*target.Target, *httptest.Server) {
	t.Helper()
	tg := target.New(opts)
	srv := httptest.NewServer(tg)
	t.Cleanup(srv.Close)
	return tg, srv
}

func TestMaxInFlightIsExact(t *testing.T) {
	const n = 8
	entered := make(chan struct{})
	release := make(chan struct{})
	tg, srv := newServer(t, target.Options{OnRequest: func(r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}})

	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			resp, err := srv.Client().Get(fmt.Sprintf("%s/orders/%d", srv.URL, i))
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	for range n {
		<-entered
	}
	s := tg.Stats()
	if s.InFlight != n || s.MaxInFlight != n || s.Requests != n {
		t.Fatalf("while held: in_flight=%d max=%d requests=%d, want %d each", s.InFlight, s.MaxInFlight, s.Requests, n)
	}
	close(release)
	wg.Wait()
	for i, st := range statuses {
		if st != http.StatusOK {
			t.Errorf("request %d: status %d", i, st)
		}
	}
	s = tg.Stats()
	if s.InFlight != 0 || s.MaxInFlight != n || s.ByStatus[200] != n {
		t.Fatalf("after: in_flight=%d max=%d by_status=%v, want 0, %d, 200:%d", s.InFlight, s.MaxInFlight, s.ByStatus, n, n)
	}

	// Sequential requests never raise the high-water mark above 1.
	tg.Reset()
	tg.SetOptions(target.Options{})
	for range 5 {
		do(t, srv.Client(), "GET", srv.URL+"/x", "", "")
	}
	if s := tg.Stats(); s.MaxInFlight != 1 || s.Requests != 5 {
		t.Fatalf("sequential: max=%d requests=%d, want 1 and 5", s.MaxInFlight, s.Requests)
	}
}

// A client that bounds itself to N outstanding requests and starts the next
// one the moment a response is read must never be measured above N.
func TestBoundedClientNeverExceedsBound(t *testing.T) {
	const bound, total = 4, 300
	tg, srv := newServer(t, target.Options{})
	sem := make(chan struct{}, bound)
	var wg sync.WaitGroup
	for i := range total {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			resp, err := srv.Client().Get(fmt.Sprintf("%s/big/%d?size=20000", srv.URL, i))
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	if s := tg.Stats(); s.MaxInFlight > bound || s.Requests != total {
		t.Fatalf("max_in_flight=%d (bound %d), requests=%d (want %d)", s.MaxInFlight, bound, s.Requests, total)
	}
}

// holdAfterAnswer sends every write to the client at once and, once the
// whole body is out, holds the handler until release is closed: the client
// has its complete answer while the handler has not returned yet.
type holdAfterAnswer struct {
	http.ResponseWriter
	ctx     context.Context
	release <-chan struct{}
	written int
}

func (h *holdAfterAnswer) Write(b []byte) (int, error) {
	n, err := h.ResponseWriter.Write(b)
	h.ResponseWriter.(http.Flusher).Flush()
	h.written += n
	if cl, _ := strconv.Atoi(h.Header().Get("Content-Length")); h.written >= cl {
		select {
		case <-h.release:
		case <-h.ctx.Done():
		}
	}
	return n, err
}

// The slot is freed before the answer leaves, so a strictly sequential
// client is measured at 1 even when its next request arrives while the
// previous handler is still finishing.
func TestSlotFreedBeforeAnswerLeaves(t *testing.T) {
	secondEntered := make(chan struct{})
	tg := target.New(target.Options{OnRequest: func(r *http.Request) {
		if r.URL.Path == "/second" {
			close(secondEntered)
		}
	}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			w = &holdAfterAnswer{ResponseWriter: w, ctx: r.Context(), release: secondEntered}
		}
		tg.ServeHTTP(w, r)
	}))
	defer srv.Close()

	// No keep-alive: the second request must not queue behind the first
	// handler on the same connection.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	do(t, c, "GET", srv.URL+"/first?size=3000", "", "")
	do(t, c, "GET", srv.URL+"/second", "", "")
	if s := tg.Stats(); s.MaxInFlight != 1 {
		t.Fatalf("max_in_flight = %d for a sequential client, want 1", s.MaxInFlight)
	}
}

func TestFailFirstPerKey(t *testing.T) {
	tg, srv := newServer(t, target.Options{})
	c := srv.Client()
	url := srv.URL + "/orders/17?fail_first=2"

	var got []int
	for range 3 {
		st, _, _ := do(t, c, "POST", url, "job-1", `{"a":1}`)
		got = append(got, st)
	}
	// Another key has its own sequence, even interleaved with the first.
	st, _, _ := do(t, c, "POST", url, "job-2", "")
	if want := []int{503, 503, 200}; !slices.Equal(got, want) {
		t.Fatalf("job-1 statuses %v, want %v", got, want)
	}
	if st != 503 {
		t.Fatalf("job-2 first status %d, want 503", st)
	}
	k := tg.Key("job-1")
	if k.Requests != 3 || !slices.Equal(k.Statuses, []int{503, 503, 200}) || k.Successes != 1 || k.Duplicates != 0 {
		t.Fatalf("Key(job-1) = %+v", k)
	}
	if k := tg.Key("job-2"); !slices.Equal(k.Statuses, []int{503}) {
		t.Fatalf("Key(job-2) = %+v", k)
	}
	if k := tg.Key("unknown"); k.Requests != 0 || k.Statuses != nil {
		t.Fatalf("Key(unknown) = %+v, want zero", k)
	}
	if ks := tg.Keys(); len(ks) != 2 {
		t.Fatalf("Keys() has %d keys, want 2", len(ks))
	}
}

func TestFailFirstWithoutKeyUsesMethodAndURL(t *testing.T) {
	_, srv := newServer(t, target.Options{FailStatus: 429})
	c := srv.Client()
	seq := func(method, url string) []int {
		var got []int
		for range 3 {
			st, _, _ := do(t, c, method, url, "", "")
			got = append(got, st)
		}
		return got
	}
	if got := seq("GET", srv.URL+"/a?fail_first=1"); !slices.Equal(got, []int{429, 200, 200}) {
		t.Fatalf("GET /a: %v", got)
	}
	// Same path, other method: a different request, a fresh sequence.
	if got := seq("PUT", srv.URL+"/a?fail_first=1"); !slices.Equal(got, []int{429, 200, 200}) {
		t.Fatalf("PUT /a: %v", got)
	}
	if got := seq("GET", srv.URL+"/a?fail_first=2&fail_status=500"); !slices.Equal(got, []int{500, 500, 200}) {
		t.Fatalf("GET /a fail_status=500: %v", got)
	}
}

func TestDuplicates(t *testing.T) {
	tg, srv := newServer(t, target.Options{})
	c := srv.Client()
	do(t, c, "GET", srv.URL+"/a", "a", "")
	do(t, c, "GET", srv.URL+"/a", "a", "") // delivered before: duplicate
	do(t, c, "GET", srv.URL+"/b?fail_first=1", "b", "")
	do(t, c, "GET", srv.URL+"/b?fail_first=1", "b", "") // a retry, not a duplicate
	do(t, c, "GET", srv.URL+"/b?fail_first=1", "b", "") // duplicate
	do(t, c, "GET", srv.URL+"/c", "", "")
	do(t, c, "GET", srv.URL+"/c", "", "") // no key: cannot be told apart

	s := tg.Stats()
	if s.Duplicates != 2 || s.DistinctKeys != 2 || s.Requests != 7 {
		t.Fatalf("stats %+v, want 2 duplicates, 2 keys, 7 requests", s)
	}
	if k := tg.Key("a"); k.Duplicates != 1 || k.Successes != 2 {
		t.Fatalf("Key(a) = %+v", k)
	}
	if k := tg.Key("b"); k.Duplicates != 1 || !slices.Equal(k.Statuses, []int{503, 200, 200}) {
		t.Fatalf("Key(b) = %+v", k)
	}
}

// Two overlapping sends of one job that both succeed are one duplicate,
// however they interleave.
func TestOverlappingSendsCountOneDuplicate(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	tg, srv := newServer(t, target.Options{OnRequest: func(r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { do(t, srv.Client(), "POST", srv.URL+"/pay", "job-9", "x") })
	}
	<-entered
	<-entered
	close(release)
	wg.Wait()
	if s := tg.Stats(); s.Duplicates != 1 {
		t.Fatalf("duplicates = %d, want 1", s.Duplicates)
	}
}

func TestStatusKnobWins(t *testing.T) {
	tg, srv := newServer(t, target.Options{FailRate: 1})
	c := srv.Client()
	for range 3 {
		if st, _, _ := do(t, c, "GET", srv.URL+"/missing?status=404&fail_first=5", "k", ""); st != 404 {
			t.Fatalf("status knob: got %d, want 404", st)
		}
	}
	st, _, body := do(t, c, "POST", srv.URL+"/created?status=201", "", "")
	if st != 201 {
		t.Fatalf("status=201: got %d", st)
	}
	var e map[string]any
	if err := json.Unmarshal(body, &e); err != nil || e["path"] != "/created" {
		t.Fatalf("201 body %q: %v", body, err)
	}
	if st, _, _ := do(t, c, "GET", srv.URL+"/plain", "", ""); st != 503 {
		t.Fatalf("FailRate=1 without knobs: got %d, want 503", st)
	}
	if s := tg.Stats(); s.ByStatus[404] != 3 || s.ByStatus[201] != 1 || s.ByStatus[503] != 1 {
		t.Fatalf("by_status %v", s.ByStatus)
	}
}

func TestEchoBody(t *testing.T) {
	_, srv := newServer(t, target.Options{})
	st, h, body := do(t, srv.Client(), "POST", srv.URL+"/orders/17?x=1", "job-1", "hello")
	if st != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content-type %q", st, h.Get("Content-Type"))
	}
	var e struct {
		Method        string `json:"method"`
		Path          string `json:"path"`
		Key           string `json:"key"`
		ReceivedBytes int64  `json:"received_bytes"`
		Attempt       int    `json:"attempt"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if e.Method != "POST" || e.Path != "/orders/17" || e.Key != "job-1" || e.ReceivedBytes != 5 || e.Attempt != 1 {
		t.Fatalf("echo %+v", e)
	}
}

func TestRetryAfterOnFailuresOnly(t *testing.T) {
	_, srv := newServer(t, target.Options{})
	c := srv.Client()
	url := srv.URL + "/r?fail_first=1&retry_after=2"
	st, h, _ := do(t, c, "GET", url, "k", "")
	if st != 503 || h.Get("Retry-After") != "2" {
		t.Fatalf("failure: status %d Retry-After %q", st, h.Get("Retry-After"))
	}
	st, h, _ = do(t, c, "GET", url, "k", "")
	if st != 200 || h.Get("Retry-After") != "" {
		t.Fatalf("success: status %d Retry-After %q", st, h.Get("Retry-After"))
	}
	date := "Wed, 21 Oct 2037 07:28:00 GMT"
	st, h, _ = do(t, c, "GET", srv.URL+"/r?status=429&retry_after="+strings.ReplaceAll(date, " ", "%20"), "", "")
	if st != 429 || h.Get("Retry-After") != date {
		t.Fatalf("HTTP-date: status %d Retry-After %q", st, h.Get("Retry-After"))
	}
}

func TestSizeKnob(t *testing.T) {
	_, srv := newServer(t, target.Options{})
	c := srv.Client()
	for _, size := range []int{0, 5, 1000, 100_000} {
		for _, q := range []string{"", "&status=500"} {
			st, _, body := do(t, c, "GET", fmt.Sprintf("%s/s?size=%d%s", srv.URL, size, q), "", "")
			if len(body) != size {
				t.Fatalf("size=%d%s: got %d bytes (status %d)", size, q, len(body), st)
			}
			if size >= 1000 && !json.Valid(body) {
				t.Fatalf("size=%d%s: body is not JSON: %.80q", size, q, body)
			}
		}
	}
}

func TestBadKnobIs400(t *testing.T) {
	tg, srv := newServer(t, target.Options{})
	for _, q := range []string{"latency=fast", "status=99", "fail_first=-1", "fail_rate=2", "fail_status=200", "retry_after=soon", "size=-3"} {
		st, _, body := do(t, srv.Client(), "GET", srv.URL+"/x?"+q, "", "")
		if st != 400 || !strings.Contains(string(body), strings.SplitN(q, "=", 2)[0]) {
			t.Errorf("%s: status %d body %q, want 400 naming the knob", q, st, body)
		}
	}
	if s := tg.Stats(); s.ByStatus[400] != 7 {
		t.Fatalf("by_status %v", s.ByStatus)
	}
}

func TestStatsAndResetEndpoints(t *testing.T) {
	tg, srv := newServer(t, target.Options{})
	c := srv.Client()
	do(t, c, "GET", srv.URL+"/a?fail_first=1", "k1", "")
	do(t, c, "POST", srv.URL+"/b", "k2", "abc")

	st, _, body := do(t, c, "GET", srv.URL+"/stats", "", "")
	var s target.Stats
	if err := json.Unmarshal(body, &s); st != 200 || err != nil {
		t.Fatalf("GET /stats: %d %q %v", st, body, err)
	}
	if s.Requests != 2 || s.ByStatus[503] != 1 || s.ByStatus[200] != 1 || s.ReceivedBytes != 3 || s.DistinctKeys != 2 {
		t.Fatalf("stats %+v", s)
	}

	_, _, body = do(t, c, "GET", srv.URL+"/stats?keys=1", "", "")
	var withKeys struct {
		Requests     int64                      `json:"requests"`
		DistinctKeys int                        `json:"distinct_keys"`
		Keys         map[string]target.KeyStats `json:"keys"`
	}
	if err := json.Unmarshal(body, &withKeys); err != nil {
		t.Fatal(err)
	}
	if withKeys.Requests != 2 || withKeys.DistinctKeys != 2 || !slices.Equal(withKeys.Keys["k1"].Statuses, []int{503}) {
		t.Fatalf("stats?keys=1: %s", body)
	}

	if st, _, _ := do(t, c, "GET", srv.URL+"/reset", "", ""); st != http.StatusMethodNotAllowed {
		t.Fatalf("GET /reset: %d, want 405", st)
	}
	if st, _, _ := do(t, c, "POST", srv.URL+"/reset", "", ""); st != http.StatusNoContent {
		t.Fatalf("POST /reset: %d, want 204", st)
	}
	s = tg.Stats()
	if s.Requests != 0 || len(s.ByStatus) != 0 || s.DistinctKeys != 0 || s.MaxInFlight != 0 {
		t.Fatalf("after reset: %+v", s)
	}
	// fail_first sequences start over too.
	if st, _, _ := do(t, c, "GET", srv.URL+"/a?fail_first=1", "k1", ""); st != 503 {
		t.Fatalf("fail_first after reset: %d, want 503", st)
	}
}

func TestLatencyHonoursClientGivingUp(t *testing.T) {
	entered := make(chan struct{}, 1)
	handlerDone := make(chan struct{}, 1)
	tg := target.New(target.Options{OnRequest: func(*http.Request) { entered <- struct{}{} }})
	// Knowing when the handler has returned lets the test check the slot
	// was freed without polling.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.ServeHTTP(w, r)
		handlerDone <- struct{}{}
	}))
	defer srv.Close()

	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+"/slow?latency=5m", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Idempotency-Key", "slow-1")
	errc := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-entered
	if s := tg.Stats(); s.InFlight != 1 {
		t.Fatalf("in_flight = %d while sleeping, want 1", s.InFlight)
	}
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("request succeeded despite cancellation")
	}
	<-handlerDone
	s := tg.Stats()
	if s.InFlight != 0 || s.Canceled != 1 || len(s.ByStatus) != 0 {
		t.Fatalf("after give-up: %+v", s)
	}
	if k := tg.Key("slow-1"); !slices.Equal(k.Statuses, []int{0}) {
		t.Fatalf("Key(slow-1) = %+v, want statuses [0]", k)
	}
}

func TestSetOptionsFlipsHealth(t *testing.T) {
	tg, srv := newServer(t, target.Options{FailRate: 1, FailStatus: 502})
	c := srv.Client()
	if st, _, _ := do(t, c, "GET", srv.URL+"/h", "", ""); st != 502 {
		t.Fatalf("failing host: %d, want 502", st)
	}
	tg.SetOptions(target.Options{})
	if st, _, _ := do(t, c, "GET", srv.URL+"/h", "", ""); st != 200 {
		t.Fatalf("healthy host: %d, want 200", st)
	}
	if got := tg.Options().FailStatus; got != target.DefaultFailStatus {
		t.Fatalf("FailStatus default = %d, want %d", got, target.DefaultFailStatus)
	}
}

func TestFailRateIsReproducible(t *testing.T) {
	run := func(seed int64) []int {
		_, srv := newServer(t, target.Options{FailRate: 0.5, Jitter: time.Millisecond, Seed: seed})
		var got []int
		for range 40 {
			st, _, _ := do(t, srv.Client(), "GET", srv.URL+"/r", "", "")
			got = append(got, st)
		}
		return got
	}
	a, b := run(42), run(42)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different sequences:\n%v\n%v", a, b)
	}
	if !slices.Contains(a, 200) || !slices.Contains(a, 503) {
		t.Fatalf("fail_rate 0.5 gave a one-sided sequence %v", a)
	}
	// Reset restarts the sequence from the seed.
	tg, srv := newServer(t, target.Options{FailRate: 0.5, Seed: 42})
	var first, second []int
	for range 20 {
		st, _, _ := do(t, srv.Client(), "GET", srv.URL+"/r", "", "")
		first = append(first, st)
	}
	tg.Reset()
	for range 20 {
		st, _, _ := do(t, srv.Client(), "GET", srv.URL+"/r", "", "")
		second = append(second, st)
	}
	if !slices.Equal(first, second) || !slices.Equal(first, a[:20]) {
		t.Fatalf("after Reset: %v, before: %v, fresh: %v", second, first, a[:20])
	}
}

// Under concurrent load every request is answered once and counted once.
func TestConcurrentCountsAddUp(t *testing.T) {
	tg, srv := newServer(t, target.Options{FailRate: 0.3, Seed: 7})
	const workers, each = 16, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/load", strings.NewReader("xy"))
				req.Header.Set("Idempotency-Key", fmt.Sprintf("job-%d-%d", w, i%5))
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	s := tg.Stats()
	var answered int64
	for _, n := range s.ByStatus {
		answered += n
	}
	if s.Requests != workers*each || answered != s.Requests || s.InFlight != 0 || s.ReceivedBytes != 2*workers*each {
		t.Fatalf("stats %+v", s)
	}
	if s.DistinctKeys != workers*5 || s.MaxInFlight < 1 || s.MaxInFlight > workers {
		t.Fatalf("keys=%d max_in_flight=%d", s.DistinctKeys, s.MaxInFlight)
	}
	var perKey int
	for _, k := range tg.Keys() {
		perKey += k.Requests
	}
	if perKey != workers*each {
		t.Fatalf("per-key requests sum to %d, want %d", perKey, workers*each)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (target.Options{}).Validate(); err != nil {
		t.Fatalf("zero options: %v", err)
	}
	err := target.Options{Latency: -1, FailRate: 1.5, FailStatus: 200}.Validate()
	if err == nil {
		t.Fatal("invalid options accepted")
	}
	for _, want := range []string{"latency", "fail rate", "fail status"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// With Capacity, a request that arrives while Capacity others are in
// flight is answered 429 at once; arrivals are recorded when asked.
func TestCapacityAnswers429AtOnce(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	tg, srv := newServer(t, target.Options{Capacity: 2, RecordArrivals: true, OnRequest: func(r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
	}})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/hold", nil)
			resp, err := srv.Client().Do(req)
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	<-entered
	<-entered
	// A latency of a minute would hold this request if it were not refused.
	status, _, body := do(t, srv.Client(), "GET", srv.URL+"/x?latency=1m", "k1", "")
	if status != http.StatusTooManyRequests || !strings.Contains(string(body), "over capacity") {
		t.Fatalf("third request: %d %s, want 429 over capacity", status, body)
	}
	close(release)
	wg.Wait()
	if status, _, _ := do(t, srv.Client(), "GET", srv.URL+"/x", "k2", ""); status != http.StatusOK {
		t.Fatalf("below capacity: %d", status)
	}
	s := tg.Stats()
	if s.ByStatus[429] != 1 || s.ByStatus[200] != 3 || s.MaxInFlight != 3 {
		t.Fatalf("stats %+v: want one 429, three 200, at most 3 in flight (the refused one included)", s)
	}
	arr := tg.Arrivals()
	if len(arr) != 4 || !slices.IsSortedFunc(arr, time.Time.Compare) {
		t.Fatalf("arrivals %v: want 4, in order", arr)
	}
	tg.Reset()
	if n := len(tg.Arrivals()); n != 0 {
		t.Fatalf("%d arrivals after Reset", n)
	}
}
