package console

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// keepAlive is how often an idle event stream sends a comment, so proxies
// and browsers do not take a quiet connection for a dead one.
const keepAlive = 15 * time.Second

// writeTimeout bounds each write of an event stream: a snapshot is a few
// KB, so a viewer that takes this long is gone.
const writeTimeout = 10 * time.Second

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
	if !c.bound(rc) {
		return
	}
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	snaps, stop := c.hub.subscribe()
	defer stop()
	ping := time.NewTicker(keepAlive)
	defer ping.Stop()
	for {
		var msg []byte
		select {
		case <-r.Context().Done():
			return
		case b := <-snaps:
			msg = b
		case <-ping.C:
		}
		if !c.bound(rc) {
			return
		}
		var err error
		if msg != nil {
			err = writeEvent(w, "snapshot", msg)
		} else {
			_, err = fmt.Fprint(w, ": keep-alive\n\n")
		}
		if err != nil || rc.Flush() != nil {
			return
		}
	}
}

// bound sets the deadline of the next write: a viewer that vanished
// without closing would block it for as long as the kernel retries, and
// shutdown with it. A writer without deadlines (a recorder) goes unbounded.
func (c *Console) bound(rc *http.ResponseController) bool {
	err := rc.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	return err == nil || errors.Is(err, http.ErrNotSupported)
}
