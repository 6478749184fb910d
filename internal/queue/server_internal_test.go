package queue

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/natstest"
)

// serverJS starts an embedded server for t, checks for leaked goroutines
// at its end, and returns a JetStream context connected to it.
func serverJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	leakcheck.AtEnd(t)
	return connectJS(t, natstest.RunServer(t).ClientURL())
}

// connectJS connects to url for the test's length.
func connectJS(t *testing.T, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
