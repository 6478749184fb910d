package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// Completed jobs are remembered in a KV bucket, <PREFIX>_DONE, so that a file
// enqueued again after the jobs stream's dedup window has passed still sends
// no request twice. A worker writes the marker right after it stores a
// job's result; enqueue looks markers up before it publishes. Markers expire
// with the results they point to (TTL = results max age).

// DoneBucket is the KV bucket of completion markers.
func (n Names) DoneBucket() string { return n.upper() + "_DONE" }

// DoneKey is a job id's key in the done bucket: the first 128 bits of its
// SHA-256. KV keys allow only [-/_=.a-zA-Z0-9], and a fixed size keeps any
// id, however long or odd, one short key.
type DoneKey [16]byte

// DoneKeyOf returns the key of job id.
func DoneKeyOf(id string) DoneKey {
	sum := sha256.Sum256([]byte(id))
	return DoneKey(sum[:16])
}

// String is the key as written in the bucket (32 hex digits).
func (k DoneKey) String() string { return hex.EncodeToString(k[:]) }

// DoneMarker is the value of a completion marker.
type DoneMarker struct {
	ID    string `json:"id"`
	Batch string `json:"batch"`
	// Seq is the result's sequence in the results stream.
	Seq uint64 `json:"seq"`
	// The outcome, so that a re-run can tell a job that sent nothing from
	// one that did without reading its result. Markers written before these
	// fields existed read as "sent", the safe side.
	OK       bool   `json:"ok,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Run is the job's re-drive count in that run; a job sent again takes
	// the next one, so its result is not taken for a duplicate.
	Run int `json:"run,omitempty"`
	// At is when the marker was stored (the server's time stamp), not part
	// of the value.
	At time.Time `json:"-"`
}

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

// RerunMsgID is the de-duplication id of a job sent again after the run
// marked by m sent nothing (see RunMsgID).
func RerunMsgID(m *DoneMarker) string { return RunMsgID(m.ID, m.Batch, m.Run+1) }

// RunMsgID is the de-duplication id of run number run of job id, sent again
// after its previous run in batch failed. The job id alone would be dropped
// within the dedup window. A re-drive and a re-run build it alike, so the
// two cannot both send one job again, and repeating either is idempotent.
func RunMsgID(id, batch string, run int) string {
	return id + "/run/" + batch + "/" + strconv.Itoa(run)
}

func (n Names) doneSubjectPrefix() string { return "$KV." + n.DoneBucket() + "." }

// SetupDone creates the done bucket, or updates its TTL, idempotently. The
// TTL is the results' max age: a marker is of no use once its result is gone.
func SetupDone(ctx context.Context, js jetstream.JetStream, n Names, cfg StreamConfig) error {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      n.DoneBucket(),
		Description: "jetpost: completed jobs (by job id hash) and where their results are",
		TTL:         cfg.ResultsMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("creating bucket %s: %w", n.DoneBucket(), err)
	}
	return nil
}

// storeResultMarked stores a result durably, as publishDurable does, then
// publishes the job's completion marker asynchronously and returns its
// pending ack. The marker needs the result's stream sequence; waiting for
// it here would add a round trip to every job. A lost marker costs only the
// protection of a re-run after the dedup window. The bucket exists: Setup
// creates it.
func (c *Consumer) storeResultMarked(ctx context.Context, j *job.Job, r *job.Result, dedup string, data []byte) (jetstream.PubAckFuture, error) {
	ack, err := c.publishDurable(ctx, c.names.ResultSubject(r.Batch), dedup, data)
	if err != nil {
		return nil, err
	}
	value, err := json.Marshal(DoneMarker{
		ID: r.ID, Batch: r.Batch, Seq: ack.Sequence, // a duplicate's ack carries the original's sequence
		OK: r.OK, Attempts: r.Attempts, Reason: r.Reason, Run: j.Redrive,
	})
	if err != nil {
		return nil, nil
	}
	f, err := c.js.PublishMsgAsync(&nats.Msg{Subject: c.names.doneSubjectPrefix() + DoneKeyOf(r.ID).String(), Data: value})
	if err != nil {
		c.log.Warn().Err(err).Str("job", r.ID).Msg("completion marker not stored")
		return nil, nil
	}
	return f, nil
}

// markerWait bounds how long settling waits for a marker's ack that did not
// come with the job's own ack.
const markerWait = 5 * time.Second

// awaitMarker reports a completion marker the broker did not store.
func (c *Consumer) awaitMarker(ctx context.Context, d *Delivery, f jetstream.PubAckFuture) {
	if f == nil {
		return
	}
	t := time.NewTimer(markerWait)
	defer t.Stop()
	var err error
	select {
	case <-f.Ok():
		return
	case err = <-f.Err():
	case <-ctx.Done():
		return
	case <-t.C:
		err = errors.New("no answer within " + markerWait.String())
	}
	c.deliveryEvent(c.log.Warn(), d).Err(err).Msg("completion marker not stored; enqueueing this job again after the dedup window would send it again")
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
	return &DoneIndex{nc: js.Conn(), api: prefix + "DIRECT.GET.KV_" + n.DoneBucket(), subjPre: n.doneSubjectPrefix()}
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
		subj := m.Header.Get(jetstream.SubjectHeader)
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			continue
		}
		var k DoneKey
		if hx, ok := strings.CutPrefix(subj, c.x.subjPre); !ok || len(hx) != 2*len(k) {
			continue
		} else if _, err := hex.Decode(k[:], []byte(hx)); err != nil {
			continue
		}
		var dm DoneMarker
		if err := json.Unmarshal(m.Data, &dm); err != nil || dm.Seq == 0 {
			continue
		}
		dm.At, _ = time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
		if index == nil {
			index = make(map[DoneKey]int, len(c.keys))
			for i, k := range c.keys {
				index[k] = i
			}
			found = make([]*DoneMarker, len(c.keys))
		}
		if i, ok := index[k]; ok {
			found[i] = &dm
		}
	}
}

// FetchResults calls fn with the stored result records of batch at the
// given stream sequences (ascending). A sequence whose result is no longer
// stored (expired, purged) is left out; fn sees the others in order. A few
// are read one by one, many with one ordered consumer over the batch's
// subject from the first of them, which reads a re-run's results at stream
// speed.
func FetchResults(ctx context.Context, js jetstream.JetStream, n Names, batch string, seqs []uint64, fn func(seq uint64, data []byte) error) error {
	if len(seqs) == 0 {
		return nil
	}
	st, err := js.Stream(ctx, n.ResultsStream())
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.ResultsStream(), err)
	}
	subject := n.ResultSubject(batch)
	if len(seqs) <= 32 {
		for _, seq := range seqs {
			m, err := st.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("reading result %d: %w", seq, err)
			}
			if m.Subject != subject {
				continue
			}
			if err := fn(seq, m.Data); err != nil {
				return err
			}
		}
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    seqs[0],
	})
	if err != nil {
		return fmt.Errorf("reading results of batch %s: %w", batch, err)
	}
	next := 0
	return readOrdered(ctx, cons, func(m jetstream.Msg, seq uint64) (bool, error) {
		for next < len(seqs) && seqs[next] < seq {
			next++ // not stored any more
		}
		if next < len(seqs) && seqs[next] == seq {
			next++
			if err := fn(seq, m.Data()); err != nil {
				return true, err
			}
		}
		return next == len(seqs), nil
	})
}

// readOrdered hands fn every message of an ordered consumer, in order,
// until fn says stop or the consumer has delivered all there is. Stored
// messages are available at once, so each batch is asked for without
// waiting; an empty answer ends the reading only if the consumer has
// nothing pending.
func readOrdered(ctx context.Context, cons jetstream.Consumer, fn func(m jetstream.Msg, seq uint64) (stop bool, err error)) error {
	empty := 0
	for {
		msgs, err := cons.FetchNoWait(1000)
		if err != nil {
			return err
		}
		got := 0
		for m := range msgs.Messages() {
			got++
			md, err := m.Metadata()
			if err == nil {
				var stop bool
				stop, err = fn(m, md.Sequence.Stream)
				if err == nil && !stop && md.NumPending > 0 {
					continue
				}
			}
			// Let the fetch end (its goroutine closes the channel once
			// the server has said it is done) rather than leave it behind.
			for range msgs.Messages() {
			}
			return err
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if got > 0 {
			empty = 0
			continue
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending == 0 {
			return nil
		}
		if empty++; empty > 100 {
			return fmt.Errorf("%d messages pending but none delivered", info.NumPending)
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
}

// ReadResults calls fn with every result of batch stored now, in stream
// order, and returns how many there were. Results stored while it reads may
// or may not be included. A batch re-driven holds more than one result for
// some jobs; ReadLatestResults gives one per job.
func ReadResults(ctx context.Context, js jetstream.JetStream, n Names, batch string, fn func(seq uint64, data []byte) error) (int, error) {
	return readResultsUpTo(ctx, js, n, batch, 0, fn)
}

// readResultsUpTo is ReadResults stopping after stream sequence last (0:
// no bound).
func readResultsUpTo(ctx context.Context, js jetstream.JetStream, n Names, batch string, last uint64, fn func(seq uint64, data []byte) error) (int, error) {
	st, err := js.Stream(ctx, n.ResultsStream())
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", n.ResultsStream(), err)
	}
	subject := n.ResultSubject(batch)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", n.ResultsStream(), err)
	}
	if info.State.Subjects[subject] == 0 {
		return 0, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return 0, fmt.Errorf("reading results of batch %s: %w", batch, err)
	}
	count := 0
	err = readOrdered(ctx, cons, func(m jetstream.Msg, seq uint64) (bool, error) {
		if last > 0 && seq > last {
			return true, nil
		}
		count++
		return last > 0 && seq == last, fn(seq, m.Data())
	})
	if err != nil {
		return count, fmt.Errorf("reading results of batch %s: %w", batch, err)
	}
	return count, nil
}

// PendingJobs reports, for each stream sequence, whether that job message
// is still in the jobs stream (waiting, in progress or waiting for a
// retry): a work queue drops a job once it is acknowledged.
func PendingJobs(ctx context.Context, js jetstream.JetStream, n Names, seqs []uint64) ([]bool, error) {
	st, err := js.Stream(ctx, n.JobsStream())
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(seqs))
	for i, seq := range seqs {
		_, err = st.GetMsg(ctx, seq)
		switch {
		case err == nil:
			out[i] = true
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return nil, err
		}
	}
	return out, nil
}

// ResultBatchCount returns how many results of batch are stored.
func ResultBatchCount(ctx context.Context, js jetstream.JetStream, n Names, batch string) (uint64, error) {
	st, err := js.Stream(ctx, n.ResultsStream())
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(n.ResultSubject(batch)))
	if err != nil {
		return 0, err
	}
	return info.State.Subjects[n.ResultSubject(batch)], nil
}
