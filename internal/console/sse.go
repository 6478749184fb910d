package console

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"time"
)

// keepAlive is how often an idle event stream sends a comment, so proxies
// and browsers do not take a quiet connection for a dead one.
const keepAlive = 15 * time.Second

// writeEvent frames one server-sent event. data must hold no newline
// (JSON from encoding/json holds none); a line break would end the field.
func writeEvent(w io.Writer, event string, data []byte) error {
	if bytes.ContainsAny(data, "\r\n") {
		return fmt.Errorf("event %s: data holds a line break", event)
	}
	_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
	return err
}

// events streams a snapshot per tick while the viewer stays.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx would hold events back
	w.WriteHeader(http.StatusOK)
	// The browser waits this long before reconnecting after a drop.
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	snaps, stop := c.hub.subscribe()
	defer stop()
	ping := time.NewTicker(keepAlive)
	defer ping.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case b := <-snaps:
			err = writeEvent(w, "snapshot", b)
		case <-ping.C:
			_, err = fmt.Fprint(w, ": keep-alive\n\n")
		}
		if err != nil || rc.Flush() != nil {
			return
		}
	}
}
