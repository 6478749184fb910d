package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetpost/jetpost/pkg/retry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streamRead says which stored messages readStream reads.
type streamRead struct {
	stream  string
	subject string // filter; may end in a wildcard
	what    string // for errors: "reading <what>: ..."
	from    uint64 // first stream sequence; 0: the first there is
	upTo    uint64 // last stream sequence; 0: no bound
	// upToNow bounds the read at the stream's last sequence when it starts:
	// messages stored while it reads are left out.
	upToNow bool
}

// readStream hands fn, in stream order, every message r selects, until fn
// says stop or the messages stored when it started are read (unbounded, it
// may also read some stored meanwhile). Every ordered read of a stream in
// this package goes through it.
func readStream(ctx context.Context, js jetstream.JetStream, r streamRead, fn func(seq uint64, data []byte) (stop bool, err error)) error {
	st, err := js.Stream(ctx, r.stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", r.stream, err)
	}
	// An ordered consumer over nothing is a round trip for nothing.
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(r.subject))
	if err != nil {
		return fmt.Errorf("stream %s: %w", r.stream, err)
	}
	var stored uint64
	for _, c := range info.State.Subjects {
		stored += c
	}
	if stored == 0 {
		return nil
	}
	if r.upToNow {
		r.upTo = info.State.LastSeq
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{r.subject}}
	if r.from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.from
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err == nil {
		err = readOrdered(ctx, cons, func(m jetstream.Msg, seq uint64) (bool, error) {
			if r.upTo > 0 && seq > r.upTo {
				return true, nil
			}
			stop, err := fn(seq, m.Data())
			return stop || (r.upTo > 0 && seq == r.upTo), err
		})
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", r.what, err)
	}
	return nil
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
		_ = retry.Sleep(ctx, 20*time.Millisecond)
	}
}
