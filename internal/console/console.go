package console

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/queue"
)

//go:embed assets
var assets embed.FS

// Config is what a console needs.
type Config struct {
	// JS reaches the state: the worker's connection, or a separate one
	// with the rights the actions need.
	JS    jetstream.JetStream
	Names queue.Names
	// Token enables the actions (pause, resume, cancel, re-drive); empty
	// leaves the console read-only.
	Token string
	// Worker names the worker that serves the page.
	Worker string
	// Interval is the time between snapshots while someone watches
	// (default 2s); RateWindow is how long each batch's rate is measured
	// within it (default 1s, as enqueue status).
	Interval, RateWindow time.Duration
	Log                  zerolog.Logger
	// Now stands in for the clock.
	Now func() time.Time
}

// Console serves the page, its event stream and its actions.
type Console struct {
	cfg   Config
	src   *natsSource
	hub   *hub
	token tokenCheck
	mux   *http.ServeMux
	// writeTimeout bounds each write of an event stream (tests shorten it).
	writeTimeout time.Duration
}

// New builds a console; it reads nothing until someone looks.
func New(cfg Config) (*Console, error) {
	if cfg.JS == nil {
		return nil, errors.New("console: no JetStream handle")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Console{cfg: cfg, token: newTokenCheck(cfg.Token), writeTimeout: writeTimeout}
	c.src = &natsSource{js: cfg.JS, names: cfg.Names, now: cfg.Now}
	rd := &reader{src: c.src, rateWindow: cfg.RateWindow, now: cfg.Now}
	c.hub = newHub(func(ctx context.Context) Snapshot {
		s := rd.read(ctx)
		s.Worker, s.Actions = cfg.Worker, c.token.enabled()
		return s
	}, cfg.Interval)
	c.hub.onError = func(err error) { cfg.Log.Warn().Err(err).Msg("console: encoding a snapshot failed") }
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	static, _ := fs.Sub(assets, "assets") // a fixed, embedded path
	files := http.FileServerFS(static)
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", files)
	mux.Handle("GET /assets/", http.StripPrefix("/assets", files))
	mux.HandleFunc("GET /events", c.events)
	mux.HandleFunc("GET /api/snapshot", c.snapshot)
	mux.HandleFunc("GET /api/deadletters/{batch}", c.deadLetters)
	mux.HandleFunc("POST /api/batches/{batch}/{action}", c.action)
	c.mux = mux
}

// ServeHTTP serves the console with headers that keep the page from
// being framed, sniffed or fed scripts from elsewhere.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	c.mux.ServeHTTP(w, r)
}

// Close waits until no snapshot is being read; call it after the viewers
// left (the HTTP server's Shutdown ended their streams).
func (c *Console) Close() { c.hub.idle() }
