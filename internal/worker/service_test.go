package worker_test

import (
	"bufio"
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/worker"
)

// idleConsumer consumes nothing until its context ends (pure plumbing).
type idleConsumer struct{}

func (idleConsumer) Run(ctx context.Context, _ queue.Handler) error { <-ctx.Done(); return nil }
func (idleConsumer) Consuming() bool                                { return true }

// streamConsole streams until its request ends, and records whether its
// Close ran and whether a stream was still open then.
type streamConsole struct {
	mu            sync.Mutex
	open, closes  int
	openAtClose   int
	streaming     chan struct{}
	streamingOnce sync.Once
}

func (c *streamConsole) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.open++
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.open--; c.mu.Unlock() }()
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("streaming\n"))
	http.NewResponseController(w).Flush()
	c.streamingOnce.Do(func() { close(c.streaming) })
	<-r.Context().Done()
}

func (c *streamConsole) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closes++
	c.openAtClose = c.open
}

// The daemon closes the console once the HTTP server has shut down: after
// the open event stream ended, and before Run returns (so before the
// caller closes the NATS connection the console reads through).
func TestServiceClosesTheConsoleAfterShutdown(t *testing.T) {
	con := &streamConsole{streaming: make(chan struct{})}
	addr := make(chan string, 1)
	svc := &worker.Service{Consumer: idleConsumer{}, HTTPAddr: "127.0.0.1:0", Console: con,
		Listening: func(a string) { addr <- a }}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	resp, err := http.Get("http://" + <-addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	<-con.streaming
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	con.mu.Lock()
	defer con.mu.Unlock()
	if con.closes != 1 || con.openAtClose != 0 {
		t.Errorf("console closed %d times, with %d streams open; want once, after they ended", con.closes, con.openAtClose)
	}
}
