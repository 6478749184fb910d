package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/jetpost/jetpost/internal/dlqview"
	"github.com/jetpost/jetpost/pkg/job"
)

// tokenCheck compares a bearer token with the configured one in constant
// time: both are hashed first, so not even the length leaks.
type tokenCheck struct{ want *[sha256.Size]byte }

func newTokenCheck(token string) tokenCheck {
	if token == "" {
		return tokenCheck{}
	}
	sum := sha256.Sum256([]byte(token))
	return tokenCheck{want: &sum}
}

func (t tokenCheck) enabled() bool { return t.want != nil }

// allows reports whether r carries the token as "Authorization: Bearer".
func (t tokenCheck) allows(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !t.enabled() || !ok {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], t.want[:]) == 1
}

// authorize answers 403 when actions are off, 401 without the right
// token; it reports whether to go on. No Origin check: a cross-site page
// cannot send an Authorization header without a CORS preflight, which the
// console never answers, and behind a reverse proxy Origin and Host differ.
func (c *Console) authorize(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case !c.token.enabled():
		httpError(w, http.StatusForbidden, "actions are off: set JETPOST_CONSOLE_TOKEN on the worker to enable them")
	case !c.token.allows(r):
		w.Header().Set("WWW-Authenticate", `Bearer realm="jetpost console"`)
		httpError(w, http.StatusUnauthorized, "wrong or missing token (Authorization: Bearer)")
	default:
		return true
	}
	return false
}

// action pauses, resumes, cancels or re-drives a batch.
func (c *Console) action(w http.ResponseWriter, r *http.Request) {
	if !c.authorize(w, r) {
		return
	}
	batch, action := r.PathValue("batch"), r.PathValue("action")
	if !job.ValidBatch(batch) {
		httpError(w, http.StatusBadRequest, "not a batch id")
		return
	}
	switch action {
	case "pause", "resume", "cancel", "redrive":
	default:
		httpError(w, http.StatusNotFound, "no such action: use pause, resume, cancel or redrive")
		return
	}
	ctx := r.Context()
	if err := c.src.known(ctx, batch); err != nil {
		httpError(w, statusOf(err), err.Error())
		return
	}
	var rep any
	var err error
	if action == "redrive" {
		rep, err = c.src.redrive(ctx, batch)
	} else {
		rep, err = c.src.control(ctx, action, batch)
	}
	if err != nil {
		c.cfg.Log.Warn().Err(err).Str("batch", batch).Str("action", action).Msg("console action failed")
		httpError(w, statusOf(err), action+" "+batch+": "+err.Error())
		return
	}
	c.cfg.Log.Info().Str("batch", batch).Str("action", action).Str("from", r.RemoteAddr).Msg("console action")
	writeJSON(w, rep)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, errUnknownBatch):
		return http.StatusNotFound
	case errors.Is(err, context.Canceled):
		return 499 // the viewer left; nobody reads this
	}
	return http.StatusBadGateway
}

// maxDeadLetters bounds a listing: the page shows the first ones, and
// enqueue dlq lists them all.
const maxDeadLetters = 200

// deadLetters lists a batch's dead letters, redacted as enqueue dlq.
func (c *Console) deadLetters(w http.ResponseWriter, r *http.Request) {
	batch := r.PathValue("batch")
	if !job.ValidBatch(batch) {
		httpError(w, http.StatusBadRequest, "not a batch id")
		return
	}
	limit := maxDeadLetters
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 && n < limit {
		limit = n
	}
	dls, more, err := c.src.deadLetters(r.Context(), batch, limit)
	if err != nil {
		httpError(w, statusOf(err), err.Error())
		return
	}
	out := struct {
		Batch       string           `json:"batch"`
		DeadLetters []deadLetterLine `json:"dead_letters"`
		More        bool             `json:"more"`
	}{Batch: batch, DeadLetters: []deadLetterLine{}, More: more}
	for _, dl := range dls {
		out.DeadLetters = append(out.DeadLetters, lineOf(dl))
	}
	writeJSON(w, out)
}

// snapshot answers the hub's latest snapshot, or a fresh read when none
// is being made: concurrent pollers share one read, as the event stream's
// viewers do.
func (c *Console) snapshot(w http.ResponseWriter, r *http.Request) {
	snaps, stop := c.hub.subscribe()
	defer stop()
	select {
	case <-r.Context().Done():
	case b := <-snaps:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// deadLetterLine is what the page shows of a dead letter, and no more:
// the listing needs no token, so neither the job (body, headers) nor the
// target's response body is sent; the URL is redacted.
type deadLetterLine struct {
	Seq      uint64     `json:"seq"`
	ID       string     `json:"id"`
	Source   string     `json:"source,omitempty"`
	Reason   job.Reason `json:"reason"`
	Status   int        `json:"last_status"`
	Attempts int        `json:"last_attempts"`
	Message  string     `json:"message"`
	Method   string     `json:"method,omitempty"`
	URL      string     `json:"url,omitempty"`
}

func lineOf(dl dlqview.Shown) deadLetterLine {
	reason, status, attempts, msg := dlqview.Line(dl)
	r := dl.Result
	return deadLetterLine{Seq: dl.Seq, ID: r.ID, Source: r.Source, Reason: reason, Status: status,
		Attempts: attempts, Message: msg, Method: r.Method, URL: r.URL}
}
