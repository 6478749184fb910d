package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/console"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/workertest"
)

// chromium finds the browser the console test drives; "" if none.
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// needChromium returns the browser's path, or skips the test (in -short
// mode, for what it needs, or without a browser, saying how to get one).
func needChromium(t *testing.T, needs string) string {
	t.Helper()
	if testing.Short() {
		t.Skip(needs)
	}
	path := chromium()
	if path == "" {
		t.Skip("no chromium on PATH: install Debian's chromium package (apt-get install chromium) and run make test-browser (go test ./e2e -run TestConsole)")
	}
	return path
}

// browser starts a headless chromium with a fresh profile at a laptop's
// screen size; the test's end stops it.
func browser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1366, 768))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first run starts the browser, with no deadline: one would stop it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// inBrowser runs browser steps under the test's deadline.
func inBrowser(t *testing.T, ctx context.Context, deadline time.Time, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := chromedp.Do(rctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// evaluate runs an action with a value under the test's deadline.
func evaluate[T any](t *testing.T, ctx context.Context, deadline time.Time, what string, a chromedp.Action[T]) T {
	t.Helper()
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	v, err := chromedp.Run(rctx, a)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// rowJS reads the data-value of every field of a table row.
const rowJS = `(() => { const r = document.querySelector(%q); if (!r) return null;
  const o = {}; r.querySelectorAll("td[data-field]").forEach(td => { o[td.dataset.field] = td.dataset.value || ""; }); return o; })()`

// pageRow is one row of the page as data-field → data-value.
func pageRow(t *testing.T, ctx context.Context, deadline time.Time, selector string) map[string]string {
	t.Helper()
	return evaluate(t, ctx, deadline, "reading "+selector, chromedp.Evaluate[map[string]string](fmt.Sprintf(rowJS, selector)))
}

// artifact writes a file the test keeps, in artifacts/ at the
// repository's root (ignored by git).
func artifact(t *testing.T, name string, data []byte) {
	t.Helper()
	dir := filepath.Join("..", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	t.Logf("wrote %s", abs)
}

// The console in a real browser against two worker processes: the page
// loads and goes live, its numbers for a batch match enqueue status --json
// once the batch is quiescent (and the other worker serves the same),
// a pause clicked on the page stops the batch (nothing is sent after it
// returned beyond the requests the workers reported running), dead letters
// show with their secrets redacted, and a screenshot is kept.
func TestConsoleInABrowser(t *testing.T) {
	path := needChromium(t, "worker processes and a browser")
	deadline := time.Now().Add(chaosBudget)
	const n, batch, token = 3000, "cb", "e2e-console-token-0123456789"
	ns := natstest.RunServer(t)
	url := ns.ClientURL()
	o := newObserver(t, url)
	// The last 500 jobs are held at the target until the pause returned:
	// the batch cannot finish before it, however slow the machine.
	a, tURL, release := heldArrivals(t, 250*time.Millisecond, n-500)
	p := &pool{t: t, env: chaosWorkerEnv(url, "JETPOST_HTTP_ADDR=127.0.0.1:0", "JETPOST_CONSOLE_TOKEN="+token)}
	p.spawn().waitLineUntil("consuming jobs", deadline)
	p.spawn().waitLineUntil("consuming jobs", deadline)
	addrs := []string{opsAddr(t, p.live[0]), opsAddr(t, p.live[1])}
	deadLetters(t, url)

	// The page is up before the batch starts: a slow browser start must
	// not let the batch finish before the pause.
	ctx := browser(t, path)
	row := fmt.Sprintf("tr[data-batch=%q]", batch)
	inBrowser(t, ctx, deadline, "loading the console",
		chromedp.Navigate("http://"+addrs[0]+"/"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-batch="dl"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-host]`)))
	start(t, "enqueue", nil, "--nats", url, "--batch", batch, writeJobs(t, n, tURL))
	o.until(deadline, batch, "100 requests at the target", func() bool { return a.count() >= 100 })
	// Live: the batch's rate and ETA come without a reload.
	inBrowser(t, ctx, deadline, "showing the batch moving", chromedp.WaitVisible(chromedp.CSS(row+` td[data-field="eta"]:not([data-value=""])`)))
	artifact(t, "console-running.png", evaluate(t, ctx, deadline, "screenshot", chromedp.FullScreenshot(100)))
	buttons := evaluate(t, ctx, deadline, "counting action buttons", chromedp.Evaluate[int](`document.querySelectorAll("button[data-action]").length`))
	if buttons != 0 {
		t.Errorf("%d action buttons before the token was given, want none", buttons)
	}
	paused, running := pauseFromPage(t, ctx, deadline, "http://"+addrs[0], batch, token, len(p.live))
	release()
	// Watching for three ack waits (2s) is an observation window: a
	// correct fleet sends nothing in it, however slow the machine.
	for end := time.Now().Add(3 * 2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if got := a.after(paused); got > running {
			t.Fatalf("%d requests arrived after the page's pause returned; the workers reported %d running", got, running)
		}
	}
	settled(t, deadline, o, a, batch)
	if stored := o.stored(batch); stored >= n {
		t.Fatalf("the whole batch finished before the pause (%d results): nothing was tested", stored)
	}
	st := matchStatus(t, ctx, deadline, url, addrs[1], row, batch)
	if st.State != "paused" {
		t.Errorf("enqueue status says %s after the page's pause, want paused", st.State)
	}
	t.Logf("paused from the page with %d of %d results stored, %d requests arrived after (in flight then: %d)", st.Results, n, a.after(paused), running)
	checkDeadLetterView(t, ctx, deadline, "http://"+addrs[1])
	png := evaluate(t, ctx, deadline, "screenshot", chromedp.FullScreenshot(100))
	artifact(t, "console.png", png)
}

// pauseFromPage unlocks the actions with the token and clicks the batch's
// pause; it returns when the page said the pause returned and how many
// requests the workers still ran then. A loaded machine may keep a worker
// from answering the fence in time: then the pause is asked again through
// the console's API (the button is gone from a paused batch) until every
// live worker confirmed it, as pausing a paused batch is fine.
func pauseFromPage(t *testing.T, ctx context.Context, deadline time.Time, base, batch, token string, workers int) (time.Time, int) {
	row := fmt.Sprintf("tr[data-batch=%q]", batch)
	t.Helper()
	inBrowser(t, ctx, deadline, "unlocking actions",
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#unlock")),
		chromedp.WaitVisible(chromedp.CSS(row+` button[data-action="pause"]`)))
	inBrowser(t, ctx, deadline, "clicking pause",
		chromedp.Click(chromedp.CSS(row+` button[data-action="pause"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#message[data-state="done"][data-action="pause"], #message[data-state="failed"]`)))
	returned := time.Now()
	msg := evaluate(t, ctx, deadline, "reading the answer", chromedp.Evaluate[map[string]string](`({...document.querySelector("#message").dataset, text: document.querySelector("#message").textContent})`))
	if msg["state"] != "done" {
		t.Fatalf("pause from the page failed: %s", msg["text"])
	}
	t.Logf("the page said: %s", msg["text"])
	running, _ := strconv.Atoi(msg["running"])
	for try := 1; msg["confirmed"] != strconv.Itoa(workers); try++ {
		if try > 5 {
			t.Fatalf("the %d live workers never all confirmed the pause: %v", workers, msg)
		}
		req, _ := http.NewRequest("POST", base+"/api/batches/"+batch+"/pause", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var rep queue.ControlReport
		err = json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("pause again: %d %v", resp.StatusCode, err)
		}
		returned, running = time.Now(), rep.Fence.Running
		msg = map[string]string{"confirmed": strconv.Itoa(rep.Fence.Confirmed())}
	}
	return returned, running
}

// matchStatus waits until the page shows for batch what enqueue status
// --json says (read again each time: the page ticks every 2s), and checks
// that the other worker's console says the same. It returns the status.
func matchStatus(t *testing.T, ctx context.Context, deadline time.Time, natsURL, otherAddr, row, batch string) queue.BatchStatus {
	t.Helper()
	var st queue.BatchStatus
	var diff string
	for {
		st = enqueueStatus(t, natsURL, batch)
		shown := pageRow(t, ctx, deadline, row)
		if diff = statusDiff(st, shown); diff == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page never matched enqueue status for %s: %s", batch, diff)
		}
		time.Sleep(500 * time.Millisecond) // the next tick; the deadline bounds the wait
	}
	resp, err := http.Get("http://" + otherAddr + "/api/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var snap struct{ Batches []queue.BatchStatus }
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(snap.Batches, func(b queue.BatchStatus) bool { return b.Batch == batch })
	if i < 0 {
		t.Fatalf("the other worker's console shows no batch %s: %+v", batch, snap.Batches)
	}
	if b := snap.Batches[i]; b.Open != st.Open || b.Results != st.Results || b.State != st.State {
		t.Errorf("the other worker's console shows %+v, enqueue status %+v", b, st)
	}
	return st
}

// enqueueStatus is enqueue status BATCH --json's entry for batch.
func enqueueStatus(t *testing.T, natsURL, batch string) queue.BatchStatus {
	t.Helper()
	code, stdout, stderr := runEnqueue(t, nil, "status", batch, "--json", "--nats", natsURL)
	if code != 0 {
		t.Fatalf("enqueue status: exit %d: %s", code, stderr)
	}
	var o queue.Overview
	if err := json.Unmarshal([]byte(stdout), &o); err != nil {
		t.Fatal(err)
	}
	for _, b := range o.Batches {
		if b.Batch == batch {
			return b
		}
	}
	t.Fatalf("enqueue status lists no batch %s: %s", batch, stdout)
	return queue.BatchStatus{}
}

// statusDiff says how the page's row differs from the status ("" if not).
func statusDiff(st queue.BatchStatus, shown map[string]string) string {
	if shown == nil {
		return "no row on the page"
	}
	want := map[string]float64{
		"open": float64(st.Open), "results": float64(st.Results), "dead_letters": float64(st.DeadLetters),
		"in_flight": float64(st.InFlight), "share": st.Share, "results_per_second": st.Rate,
		"progress": float64(st.Results) / float64(st.Results+st.Open),
	}
	var diffs []string
	for field, w := range want {
		got, err := strconv.ParseFloat(shown[field], 64)
		if err != nil || math.Abs(got-w) > 1e-9 {
			diffs = append(diffs, fmt.Sprintf("%s: page %q, status %v", field, shown[field], w))
		}
	}
	if shown["state"] != st.State || shown["priority"] != st.Priority {
		diffs = append(diffs, fmt.Sprintf("state/priority: page %s/%s, status %s/%s", shown["state"], shown["priority"], st.State, st.Priority))
	}
	return strings.Join(diffs, "; ")
}

// deadLetters enqueues a batch "dl" of three jobs that a target refuses
// (400) with a secret in a header and one in the query, and waits for
// their dead letters.
func deadLetters(t *testing.T, natsURL string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadRequest) }))
	t.Cleanup(srv.Close)
	file := filepath.Join(t.TempDir(), "dl.jsonl")
	var b strings.Builder
	for i := range 3 {
		fmt.Fprintf(&b, `{"id":"bad-%d","url":"%s/refuse?api_key=query-secret-%d","headers":{"Authorization":"Bearer header-secret-%d"}}`+"\n", i, srv.URL, i, i)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runEnqueue(t, nil, "--nats", natsURL, "--batch", "dl", "--wait", file); code != 1 {
		t.Fatalf("enqueue of refused jobs: exit %d, want 1: %s", code, stderr)
	}
}

// checkDeadLetterView opens batch dl's dead letters on the page: three,
// with their reason, and no secret anywhere on the page nor in what the
// console's API sends (the page does not render the job's headers, so
// only the API shows whether the header's secret left the worker).
func checkDeadLetterView(t *testing.T, ctx context.Context, deadline time.Time, base string) {
	t.Helper()
	resp, err := http.Get(base + "/api/deadletters/dl")
	if err != nil {
		t.Fatal(err)
	}
	api, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || strings.Count(string(api), `"seq"`) != 3 {
		t.Fatalf("GET /api/deadletters/dl: %d %v: %s", resp.StatusCode, err, api)
	}
	if strings.Contains(string(api), "secret-") {
		t.Errorf("a secret is in the dead letters the console sends: %s", api)
	}
	inBrowser(t, ctx, deadline, "opening the dead letters",
		chromedp.Click(chromedp.CSS(`button[data-dlq="dl"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlq-table tbody tr[data-seq]`)))
	rows := evaluate(t, ctx, deadline, "counting dead letters", chromedp.Evaluate[int](`document.querySelectorAll("#dlq-table tbody tr[data-seq]").length`))
	text := evaluate(t, ctx, deadline, "reading the page", chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	if rows != 3 {
		t.Errorf("%d dead letters on the page, want 3", rows)
	}
	if strings.Contains(text, "secret-") {
		t.Errorf("a secret is on the page:\n%s", text)
	}
	if !strings.Contains(text, "permanent") {
		t.Errorf("the dead letters' reason (permanent) is not on the page")
	}
}

// The page renders a fleet with nothing in it: both tables say they are
// empty, and what render does after them (the totals, the workers line)
// is there too.
func TestConsoleEmptyPage(t *testing.T) {
	path := needChromium(t, "a browser")
	deadline := time.Now().Add(2 * time.Minute)
	ns := natstest.RunServer(t)
	_, js := connect(t, ns.ClientURL())
	if err := queue.Setup(t.Context(), js, workertest.Names(), workertest.Streams()); err != nil {
		t.Fatal(err)
	}
	c, err := console.New(console.Config{JS: js, Names: workertest.Names(), Worker: "w-empty", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(func() { srv.Close(); c.Close() })
	ctx := browser(t, path)
	inBrowser(t, ctx, deadline, "rendering an empty fleet",
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#batches tbody tr.empty td`)),
		chromedp.WaitVisible(chromedp.CSS(`#hosts tbody tr.empty td`)))
	totals := evaluate(t, ctx, deadline, "reading the totals", chromedp.Evaluate[string](`document.querySelector("#totals").textContent + "|" + document.querySelector("#workers").textContent`))
	if !strings.Contains(totals, "0 not yet delivered") || !strings.Contains(totals, "0 workers on the limits board") {
		t.Errorf("the page stopped rendering after the empty tables: %q", totals)
	}
}
