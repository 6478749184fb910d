package fleetrate_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/fleetrate"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/pkg/hostlimit"
)

// The shared state of a limit outlives the longest span a limit may take
// to earn its burst back (1/d, or a burst of a day's worth): forgotten
// sooner, a slow limit would start again with a full burst. A bucket made
// by an older version, with a shorter TTL, is brought up to it.
func TestRateStateOutlivesTheSlowestLimit(t *testing.T) {
	ns := natstest.RunServer(t)
	js := jsConn(t, ns)
	bucket := fleetrate.Bucket("jetpost")
	if _, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: bucket, History: 1, TTL: time.Hour, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	openStore(t, ns)
	kv, err := js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() < hostlimit.MaxSpan {
		t.Fatalf("rate state kept %v, less than the %v the slowest limit needs", st.TTL(), hostlimit.MaxSpan)
	}
}
