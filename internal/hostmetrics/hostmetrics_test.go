package hostmetrics

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetpost/jetpost/pkg/hostlimit"
)

// gather returns metric name → host → value.
func gather(t *testing.T, c *Collector) map[string]map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, mf := range mfs {
		out[mf.GetName()] = map[string]float64{}
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[mf.GetName()][m.GetLabel()[0].GetValue()] = v
		}
	}
	return out
}

func TestCollectorExportsEachHostsLimit(t *testing.T) {
	hosts := []hostlimit.HostState{
		{Host: "a.example:443", Limit: 31, InFlight: 30, Waiting: 2, Admitted: 100, Refused: 7, Latency: 50 * time.Millisecond},
		{Host: "b.example:443", Limit: 10, Admitted: 3},
	}
	got := gather(t, New(func() []hostlimit.HostState { return hosts }))
	for name, want := range map[string]float64{
		"jetpost_host_concurrency_limit": 31,
		"jetpost_host_in_flight":         30,
		"jetpost_host_waiting":           2,
		"jetpost_host_admitted_total":    100,
		"jetpost_host_refused_total":     7,
		"jetpost_host_latency_seconds":   0.05,
	} {
		if v := got[name]["a.example:443"]; v != want {
			t.Errorf("%s{host=a.example:443} = %v, want %v", name, v, want)
		}
	}
	if v := got["jetpost_host_concurrency_limit"]["b.example:443"]; v != 10 {
		t.Errorf("limit of b = %v", v)
	}
}

func TestCollectorBoundsHostLabels(t *testing.T) {
	var hosts []hostlimit.HostState
	for i := range MaxHosts + 50 {
		hosts = append(hosts, hostlimit.HostState{Host: fmt.Sprintf("h%d.example:443", i), Limit: 1, Admitted: uint64(i)})
	}
	got := gather(t, New(func() []hostlimit.HostState { return hosts }))
	if n := len(got["jetpost_host_concurrency_limit"]); n != MaxHosts {
		t.Fatalf("%d hosts reported, want the busiest %d", n, MaxHosts)
	}
	if _, ok := got["jetpost_host_concurrency_limit"][fmt.Sprintf("h%d.example:443", MaxHosts+49)]; !ok {
		t.Fatal("the busiest host is not reported")
	}
}
