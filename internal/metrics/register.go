package metrics

import "github.com/prometheus/client_golang/prometheus"

// Register adds collectors to the registry (panicking on a clash, as
// MustRegister does: names are fixed at build time) and remembers them for
// Descs.
func (m *Metrics) Register(cs ...prometheus.Collector) {
	m.reg.MustRegister(cs...)
	m.mu.Lock()
	m.registered = append(m.registered, cs...)
	m.mu.Unlock()
}

// Descs describes every metric registered so far, whether or not it has
// a value yet: the dashboards' and alerts' test checks the names they use
// against these.
func (m *Metrics) Descs() []*prometheus.Desc {
	m.mu.Lock()
	cs := append([]prometheus.Collector(nil), m.registered...)
	m.mu.Unlock()
	ch := make(chan *prometheus.Desc)
	go func() {
		defer close(ch)
		for _, c := range cs {
			c.Describe(ch)
		}
	}()
	var out []*prometheus.Desc
	for d := range ch {
		out = append(out, d)
	}
	return out
}
