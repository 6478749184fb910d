package daemon

import (
	"fmt"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/console"
	"github.com/jetpost/jetpost/internal/queue"
)

// newConsole builds the console served at / of JETPOST_HTTP_ADDR, on the
// console's own connection if one is given; none without the address.
func newConsole(cfg *config.Worker, nc *nats.Conn, names queue.Names, o Options) (http.Handler, error) {
	if cfg.HTTPAddr == "" {
		return nil, nil
	}
	if o.ConsoleConn != nil {
		nc = o.ConsoleConn
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	return console.New(console.Config{
		JS: js, Names: names, Token: cfg.ConsoleToken,
		Worker: cfg.ID(), Log: o.Log,
	})
}
