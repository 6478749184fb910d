package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/pkg/job"
)

// Deliveries that may have been delivered before (redelivered, or stored
// before their lane's consumer was created: a lane's first jobs are, as a
// batch is published before a worker finds it) need their attempt counts
// and completion markers before they may run. Asked one by one, that is two
// requests per job; a pull's deliveries arrive together, so they are
// looked up together: one direct get of the markers and one of the attempt
// counts for every burst of up to MaxDoneLookup deliveries. A burst whose
// lookup fails is checked one by one when it runs (process).

// needsCheck reports whether d must be looked up before it runs.
func (d *Delivery) needsCheck() bool {
	return d.decodeErr == nil && !d.checked && (d.NumDelivered > 1 || d.early)
}

// checkEarly looks up the markers and attempt counts of ds.
func (c *Consumer) checkEarly(ctx context.Context, ds []*Delivery) {
	if len(ds) == 0 {
		return
	}
	var keys []DoneKey
	var keyed []*Delivery
	for _, d := range ds {
		if d.Job.Kind != job.KindCallback { // a callback message leaves no marker
			keys = append(keys, DoneKeyOf(d.Job.ID, d.fp))
			keyed = append(keyed, d)
		}
	}
	call := c.done.Lookup(keys)
	defer call.Cancel()
	counts, err := c.attemptsOf(ctx, ds)
	if err != nil {
		c.log.Debug().Err(err).Int("jobs", len(ds)).Msg("looking up redelivered jobs together failed; each is looked up when it runs")
		return
	}
	wctx, cancel := context.WithTimeout(ctx, markerWait)
	defer cancel()
	markers, err := call.Wait(wctx)
	if err != nil {
		c.log.Debug().Err(err).Int("jobs", len(ds)).Msg("looking up redelivered jobs' markers together failed; each is looked up when it runs")
		return
	}
	for _, d := range ds {
		rec := counts[d.Seq]
		d.Attempts, d.TurnedAway, d.PrevTrace, d.checked, d.countsKnown = rec.Attempts, rec.TurnedAway, rec.Trace, true, true
	}
	for i, m := range markers {
		if m.settled(keyed[i]) {
			keyed[i].finished = true
		}
	}
}

// attemptsOf reads the attempt counts of ds in one multi-subject direct get
// on the attempts bucket's stream.
func (c *Consumer) attemptsOf(ctx context.Context, ds []*Delivery) (map[uint64]attemptsRecord, error) {
	pre := "$KV." + c.names.AttemptsBucket() + "."
	req := multiLastRequest{MultiLast: make([]string, len(ds))}
	for i, d := range ds {
		req.MultiLast[i] = pre + strconv.FormatUint(d.Seq, 10)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	nc := c.js.Conn()
	ch := make(chan *nats.Msg, len(ds)+2)
	inbox := nc.NewRespInbox()
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(c.directGet(c.names.AttemptsBucket()), inbox, body); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, markerWait)
	defer cancel()
	out := map[uint64]attemptsRecord{}
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			switch status := m.Header.Get("Status"); status {
			case "204", "404": // end of batch; none found
				return out, nil
			default:
				return nil, fmt.Errorf("reading attempts: status %s %s", status, m.Header.Get("Description"))
			}
		}
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			continue
		}
		key, ok := strings.CutPrefix(m.Header.Get(jetstream.SubjectHeader), pre)
		seq, err := strconv.ParseUint(key, 10, 64)
		if !ok || err != nil {
			continue
		}
		rec, err := decodeAttempts(m.Data)
		if err != nil {
			return nil, errors.Join(errors.New("reading attempts"), err)
		}
		out[seq] = rec
	}
}

// directGet is the direct-get API subject of bucket's stream.
func (c *Consumer) directGet(bucket string) string {
	prefix := c.js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	if !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	return prefix + "DIRECT.GET.KV_" + bucket
}
