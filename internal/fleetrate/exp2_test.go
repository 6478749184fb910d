package fleetrate_test

import (
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jetpost/jetpost/internal/natstest"
)

func TestExpRate(t *testing.T) {
	if os.Getenv("EXP") == "" {
		t.Skip()
	}
	workers, _ := strconv.Atoi(os.Getenv("W"))
	ns := natstest.RunServer(t)
	tg := &recorder{}
	srv := httptest.NewServer(tg)
	defer srv.Close()
	lims := startFleet(t, ns, fleetOpts{workers: workers, maxInflight: 64, rates: fmt.Sprintf("%s=200/s:20", srv.Listener.Addr())})
	n, _ := strconv.Atoi(os.Getenv("N"))
	done := make(chan struct{})
	go func() {
		last := 0
		for {
			select {
			case <-done:
				return
			case <-time.After(500 * time.Millisecond):
				arr, _ := tg.snapshot()
				s := lims[0].Snapshot()
				if len(s) > 0 {
					t.Logf("target +%d | w0 inflight %d admitted %d refused %d", len(arr)-last, s[0].InFlight, s[0].Admitted, s[0].Refused)
				}
				last = len(arr)
			}
		}
	}()
	start := time.Now()
	enqueueAndWait(t, ns, "rate", jobsFor("a", srv.URL, n))
	close(done)
	arr, _ := tg.snapshot()
	t.Logf("%d jobs in %v: %.0f/s", n, time.Since(start), float64(n-1)/arr[len(arr)-1].Sub(arr[0]).Seconds())
}

var pullWait = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("PULLWAIT")); err == nil {
		return d
	}
	return 200 * time.Millisecond
}()
