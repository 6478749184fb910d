package queue

import "github.com/nats-io/nats.go"

// SetHeaders puts h on every message published after it (the W3C trace
// context of an enqueue run); call it before the first Publish.
func (p *BulkPublisher) SetHeaders(h map[string]string) {
	if len(h) == 0 {
		p.headers = nil
		return
	}
	p.headers = make(nats.Header, len(h))
	for k, v := range h {
		p.headers[k] = []string{v}
	}
}

// addHeaders adds SetHeaders' headers to msg; the values are shared,
// never changed.
func (p *BulkPublisher) addHeaders(msg *nats.Msg) {
	for k, v := range p.headers {
		msg.Header[k] = v
	}
}

// TraceHeaders returns the W3C trace context the job message carries
// (traceparent and tracestate headers), read only when asked: a worker
// without tracing never looks.
func (d *Delivery) TraceHeaders() (traceparent, tracestate string) {
	if d.msg == nil {
		return "", ""
	}
	h := d.msg.Headers()
	return h.Get("traceparent"), h.Get("tracestate")
}

// Subject is the subject the job message was published to; "" for a
// delivery made by hand.
func (d *Delivery) Subject() string {
	if d.msg == nil {
		return ""
	}
	return d.msg.Subject()
}
