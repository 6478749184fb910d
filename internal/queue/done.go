package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// DoneKey is a job's key in the done bucket: the first 128 bits of the
// SHA-256 of its identity, the job id and the fingerprint of its request
// (job.Fingerprint). KV keys allow only [-/_=.a-zA-Z0-9], and a fixed size
// keeps any id, however long or odd, one short key. Markers written before
// identity had a fingerprint are keyed by the id alone (legacy).
type DoneKey struct {
	h      [16]byte
	legacy bool
}

// doneKeyVersion is the key's first token, which tells its markers from
// those keyed by the id alone.
const doneKeyVersion = "f."

// DoneKeyOf returns the key of the job with id whose request has
// fingerprint fp.
func DoneKeyOf(id string, fp job.Fingerprint) DoneKey {
	b := make([]byte, 0, len(fp)+len(id))
	b = append(b, fp[:]...)
	b = append(b, id...) // fp is fixed-size: no separator needed
	sum := sha256.Sum256(b)
	return DoneKey{h: [16]byte(sum[:16])}
}

// LegacyDoneKeyOf is the key the previous version stored job id's marker
// under, whatever its request.
func LegacyDoneKeyOf(id string) DoneKey {
	sum := sha256.Sum256([]byte(id))
	return DoneKey{h: [16]byte(sum[:16]), legacy: true}
}

// String is the key as written in the bucket.
func (k DoneKey) String() string {
	if k.legacy {
		return hex.EncodeToString(k.h[:])
	}
	return doneKeyVersion + hex.EncodeToString(k.h[:])
}

// DoneMarker is the value of a completion marker.
type DoneMarker struct {
	ID string `json:"id"`
	// FP is the fingerprint of the request that ran; zero in a legacy
	// marker, which says nothing of the request.
	FP    job.Fingerprint `json:"fp"`
	Batch string          `json:"batch"`
	// Seq is the result's sequence in the results stream.
	Seq uint64 `json:"seq"`
	// The outcome, so that a re-run can tell a job that sent nothing from
	// one that did without reading its result. A marker without them reads
	// as "sent", the safe side.
	OK       bool       `json:"ok,omitempty"`
	Attempts int        `json:"attempts,omitempty"`
	Reason   job.Reason `json:"reason,omitempty"`
	// Run is the job's re-drive count in that run; a job sent again takes
	// the next one, so its result is not taken for a duplicate.
	Run int `json:"run,omitempty"`
	// JobSeq is the job message's sequence in the jobs stream: a
	// redelivery of that message whose ack was lost finds it and is
	// settled without being sent again.
	JobSeq uint64 `json:"job_seq,omitempty"`
	// JobTime is the job message's time stamp in the jobs stream (Unix
	// nanoseconds): with JobSeq it names one message even when the stream
	// was deleted and created again and its sequences start over. Zero in
	// markers from before it: those match by JobSeq alone.
	JobTime int64 `json:"job_time,omitempty"`
	// At is when the marker was stored (the server's time stamp), not part
	// of the value.
	At time.Time `json:"-"`
}

// settled reports whether m is the marker of delivery d's own job message
// (its ack was lost), not of another message of the same job.
func (m *DoneMarker) settled(d *Delivery) bool {
	return m != nil && m.JobSeq == d.Seq && (m.JobTime == 0 || d.stored.IsZero() || m.JobTime == d.stored.UnixNano())
}

// Legacy reports whether the marker was written before markers carried the
// request's fingerprint: it matches a job by id alone.
func (m *DoneMarker) Legacy() bool { return m.FP == job.Fingerprint{} }

// Of reports whether the marker is that of the job with id and request
// fingerprint fp: a marker found under the job's key could still be
// another's if 128 bits ever collided.
func (m *DoneMarker) Of(id string, fp job.Fingerprint) bool { return m.ID == id && m.FP == fp }

// SentNothing reports whether the marked run ended without starting any
// request: refused before sending, turned away by an open breaker on every
// try, expired or cancelled. Sending such a job again cannot duplicate a
// request.
func (m *DoneMarker) SentNothing() bool {
	if m.OK || m.Attempts != 0 {
		return false
	}
	switch m.Reason {
	case job.ReasonRefused, job.ReasonBreakerOpen, job.ReasonExpired, job.ReasonCancelled:
		return true
	}
	return false
}

// HasLegacy reports whether the done bucket holds any marker keyed by a
// job id alone (written before markers carried a fingerprint), so that
// enqueue looks those keys up only while there are some. It is one direct
// get, the API a lookup uses: the server finds the last message of the
// legacy keys' subjects (new keys have two tokens, "f.<hex>", legacy keys
// one). A deleted marker's tombstone counts too; the lookups skip it.
func (x *DoneIndex) HasLegacy(ctx context.Context) (bool, error) {
	body, err := json.Marshal(struct {
		LastBySubject string `json:"last_by_subj"`
	}{x.subjPre + "*"})
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := x.nc.RequestWithContext(ctx, x.api, body)
	if err != nil {
		return false, fmt.Errorf("looking for legacy completion markers: %w", err)
	}
	if len(m.Data) == 0 && m.Header.Get("Status") != "" {
		if status := m.Header.Get("Status"); status != "404" {
			return false, fmt.Errorf("looking for legacy completion markers: status %s %s", status, m.Header.Get("Description"))
		}
		return false, nil
	}
	return true, nil
}

// MaxDoneLookup is how many keys one Lookup may ask for: the server answers
// at most 1024 messages to one multi-subject direct get.
const MaxDoneLookup = 1024

// DoneIndex looks completion markers up in batches, with the stream's
// multi-subject direct get: one request and one round trip for up to 1024
// keys, several requests in flight.
type DoneIndex struct {
	nc      *nats.Conn
	api     string // direct get subject of the bucket's stream
	subjPre string
}

// NewDoneIndex returns an index over the done bucket (which SetupDone made).
func NewDoneIndex(js jetstream.JetStream, n Names) *DoneIndex {
	prefix := js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	if !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	return &DoneIndex{nc: js.Conn(), api: n.doneDirectGet(prefix), subjPre: n.doneSubjectPrefix()}
}

// DoneCall is one lookup under way.
type DoneCall struct {
	x    *DoneIndex
	keys []DoneKey
	sub  *nats.Subscription
	ch   chan *nats.Msg
	err  error
}

type multiLastRequest struct {
	MultiLast []string `json:"multi_last"`
}

// Lookup sends a request for the markers of keys (at most MaxDoneLookup)
// and returns at once; Wait collects the answer.
func (x *DoneIndex) Lookup(keys []DoneKey) *DoneCall {
	c := &DoneCall{x: x, keys: keys}
	if len(keys) == 0 {
		return c
	}
	if len(keys) > MaxDoneLookup {
		c.err = fmt.Errorf("queue: %d keys in one lookup, limit %d", len(keys), MaxDoneLookup)
		return c
	}
	req := multiLastRequest{MultiLast: make([]string, len(keys))}
	for i, k := range keys {
		req.MultiLast[i] = x.subjPre + k.String()
	}
	body, err := json.Marshal(req)
	if err != nil {
		c.err = err
		return c
	}
	// Every marker and the end-of-batch status fit the channel, so the
	// connection's reader never waits for us.
	c.ch = make(chan *nats.Msg, len(keys)+2)
	inbox := x.nc.NewRespInbox()
	if c.sub, c.err = x.nc.ChanSubscribe(inbox, c.ch); c.err != nil {
		return c
	}
	if c.err = x.nc.PublishRequest(x.api, inbox, body); c.err != nil {
		_ = c.sub.Unsubscribe()
	}
	return c
}

// Cancel abandons a lookup that will not be waited for.
func (c *DoneCall) Cancel() {
	if c.sub != nil {
		_ = c.sub.Unsubscribe()
	}
}

// Wait returns the markers found, indexed like the keys given to Lookup
// (nil where there is none).
func (c *DoneCall) Wait(ctx context.Context) ([]*DoneMarker, error) {
	if c.err != nil || len(c.keys) == 0 {
		return nil, c.err
	}
	defer func() { _ = c.sub.Unsubscribe() }()
	var found []*DoneMarker
	var index map[DoneKey]int
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		var m *nats.Msg
		select {
		case m = <-c.ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout.C:
			return nil, errors.New("looking up completed jobs: no answer within 30s")
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			switch status := m.Header.Get("Status"); status {
			case "204": // end of batch
				return found, nil
			case "404": // none of the keys has a marker
				return found, nil
			case "503":
				return nil, fmt.Errorf("looking up completed jobs: %w", nats.ErrNoResponders)
			default:
				return nil, fmt.Errorf("looking up completed jobs: status %s %s", status, m.Header.Get("Description"))
			}
		}
		k, dm, ok := c.x.marker(m)
		if !ok {
			continue
		}
		if index == nil {
			index = make(map[DoneKey]int, len(c.keys))
			for i, k := range c.keys {
				index[k] = i
			}
			found = make([]*DoneMarker, len(c.keys))
		}
		if i, ok := index[k]; ok {
			found[i] = dm
		}
	}
}

// marker reads one message of a direct get's answer: the key and marker it
// holds, or false for a deleted marker or one that is not ours.
func (x *DoneIndex) marker(m *nats.Msg) (DoneKey, *DoneMarker, bool) {
	var k DoneKey
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return k, nil, false
	}
	hx, ok := strings.CutPrefix(m.Header.Get(jetstream.SubjectHeader), x.subjPre)
	if !ok {
		return k, nil, false
	}
	if hx, ok = strings.CutPrefix(hx, doneKeyVersion); !ok {
		k.legacy = true
	}
	if len(hx) != 2*len(k.h) {
		return k, nil, false
	}
	if _, err := hex.Decode(k.h[:], []byte(hx)); err != nil {
		return k, nil, false
	}
	var dm DoneMarker
	if err := json.Unmarshal(m.Data, &dm); err != nil || dm.Seq == 0 {
		return k, nil, false
	}
	dm.At, _ = time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer)) // zero if absent
	return k, &dm, true
}

// unixNanos is t in Unix nanoseconds, 0 for the zero time.
func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
