// Package natsconn turns configuration into NATS connections: the
// authentication and TLS options both commands share, reconnect behaviour
// suited to a daemon, and the embedded server that makes one machine need
// nothing else.
package natsconn

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/pkg/job"
)

// DefaultURL is where enqueue looks when nothing is configured: the embedded
// server of a worker on the same machine.
const DefaultURL = "nats://127.0.0.1:4222"

// URLFlagHelp describes a --nats flag whose empty value falls back as URL does.
const URLFlagHelp = "NATS URL (default $JETPOST_NATS_URL or " + DefaultURL + ")"

// URL is the server a command line tool connects to: the flag's value, else
// JETPOST_NATS_URL, else DefaultURL. The worker differs on purpose: with
// nothing configured it starts an embedded server instead.
func URL(flag string, c *config.Common) string {
	switch {
	case flag != "":
		return flag
	case c.NatsURL != "":
		return c.NatsURL
	default:
		return DefaultURL
	}
}

// Connect dials url with the configured credentials. A daemon (retryForever)
// keeps reconnecting for as long as it lives, including when the first
// connect fails; a command line tool fails fast so the user hears about it.
func Connect(url string, c *config.Common, name string, retryForever bool, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(500*time.Millisecond, time.Second),
		// Results published while reconnecting wait in this buffer rather
		// than failing at once.
		nats.ReconnectBufSize(32 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("disconnected from NATS")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS asynchronous error")
		}),
	}
	if retryForever {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	auth, err := AuthOptions(c)
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", redactURLs(url), err)
	}
	return nc, nil
}

// AuthOptions maps the JETPOST_NATS_* credentials to nats.go options.
func AuthOptions(c *config.Common) ([]nats.Option, error) {
	var opts []nats.Option
	if c.NatsUser != "" {
		opts = append(opts, nats.UserInfo(c.NatsUser, c.NatsPassword))
	}
	if c.NatsToken != "" {
		opts = append(opts, nats.Token(c.NatsToken))
	}
	if c.NatsNkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NatsNkeyFile)
		if err != nil {
			return nil, fmt.Errorf("JETPOST_NATS_NKEY_FILE=%q: %w", c.NatsNkeyFile, err)
		}
		opts = append(opts, o)
	}
	if c.NatsCredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.NatsCredsFile))
	}
	if c.NatsTLSCa != "" {
		opts = append(opts, nats.RootCAs(c.NatsTLSCa))
	}
	if c.NatsTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NatsTLSCert, c.NatsTLSKey))
	}
	return opts, nil
}

// redactURLs redacts each of a comma-separated list of server URLs.
func redactURLs(list string) string {
	urls := strings.Split(list, ",")
	for i, u := range urls {
		urls[i] = job.RedactURL(u)
	}
	return strings.Join(urls, ",")
}

// ErrPortInUse means the embedded server's address is taken, most often by
// another worker's embedded server or a nats-server already running.
var ErrPortInUse = errors.New("address already in use")

// StartEmbedded starts a NATS server with JetStream inside this process,
// listening on listen and storing under dir. It refuses to start when the
// address is taken and says what to do instead.
func StartEmbedded(listen, dir string, log zerolog.Logger) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen address %q: %w", listen, err)
	}
	var port int
	if _, err := fmt.Sscanf(portStr, "%d", &port); err != nil {
		return nil, fmt.Errorf("embedded NATS listen address %q: bad port", listen)
	}
	// nats-server's own bind failure is logged, not returned; probing first
	// gives the user a sentence they can act on.
	if port != 0 {
		l, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS server cannot listen on %s (%w): another worker or nats-server is probably running there; "+
				"to share it, set JETPOST_NATS_URL=nats://%s; to run a second embedded server, set JETPOST_EMBEDDED_LISTEN and JETPOST_DATA_DIR to another port and directory",
				listen, ErrPortInUse, listen)
		}
		_ = l.Close()
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS store %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("embedded NATS store %q: %w", dir, err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName:             "jetpost-embedded",
		Host:                   host,
		Port:                   port,
		JetStream:              true,
		StoreDir:               abs,
		NoSigs:                 true,
		DisableJetStreamBanner: true,
		MaxPayload:             8 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS server on %s did not become ready", listen)
	}
	log.Info().Str("url", ns.ClientURL()).Str("store", abs).
		Msg("started embedded NATS server with JetStream (set JETPOST_NATS_URL to use an external one)")
	return ns, nil
}
