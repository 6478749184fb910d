package daemon_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/jetpost/jetpost/internal/natstest"
)

// A worker with JETPOST_HTTP_ADDR serves the console at / (actions off
// without JETPOST_CONSOLE_TOKEN), and a viewer's open event stream does
// not hold up its shutdown: Run returns without error while it is open.
func TestWorkerServesTheConsoleAndStopsWithAViewer(t *testing.T) {
	ns := natstest.RunServer(t)
	for k, v := range map[string]string{
		"JETPOST_NATS_URL": ns.ClientURL(), "JETPOST_HTTP_ADDR": "127.0.0.1:0", "JETPOST_MAX_INFLIGHT": "4",
	} {
		t.Setenv(k, v)
	}
	var log logLines
	svc := startWorker(t, t.Context(), ns.ClientURL(), "w1", &log)
	if svc == nil {
		t.FailNow()
	}
	addr := make(chan string, 1)
	svc.Listening = func(a string) { addr <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	base := "http://" + <-addr

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Post(base+"/api/batches/b/pause", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("pause without JETPOST_CONSOLE_TOKEN: %d, want 403", resp.StatusCode)
	}

	stream, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	sc := bufio.NewScanner(stream.Body)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "data: ") {
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run with a viewer's event stream open: %v", err)
	}
}
