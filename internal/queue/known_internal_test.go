package queue

import (
	"testing"
	"time"
)

// What a worker remembers of its own deferral stands for the lookups only
// when nobody can have had the job since.
func TestRecallTrustsOnlyTheNextDeliveryOfTheSameConsumer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	last := lastDelivery{delivered: 2, consumer: t0, attempts: 3, turnedAway: 1}
	cases := []struct {
		name      string
		delivered uint64
		consumer  time.Time
		last      lastDelivery
		trusted   bool
	}{
		{"next delivery", 3, t0, last, true},
		{"another worker had it in between", 4, t0, last, false},
		{"consumer made again", 3, t0.Add(time.Second), last, false},
		{"consumer unknown", 3, time.Time{}, last, false},
		{"nothing remembered", 3, t0, lastDelivery{}, false},
	}
	for _, tc := range cases {
		d := &Delivery{NumDelivered: tc.delivered, consumer: tc.consumer}
		d.recall(tc.last)
		if d.checked != tc.trusted || d.countsKnown != tc.trusted {
			t.Errorf("%s: checked %v, counts known %v; want %v", tc.name, d.checked, d.countsKnown, tc.trusted)
		}
		if tc.trusted && (d.Attempts != 3 || d.TurnedAway != 1) {
			t.Errorf("%s: counts %d/%d, want 3/1", tc.name, d.Attempts, d.TurnedAway)
		}
	}
	// Counts this worker did not know are not remembered.
	d := &Delivery{NumDelivered: 2, consumer: t0, lane: &lane{}}
	d.remember(attemptsRecord{Attempts: 1})
	if d.last.delivered != 0 {
		t.Errorf("remembered %+v of a delivery whose counts were not known", d.last)
	}
	d.countsKnown, d.Attempts, d.PrevTrace = true, 2, "00-prev"
	d.remember(d.counts()) // a park: nothing recorded
	if want := (lastDelivery{delivered: 2, consumer: t0, attempts: 2, trace: "00-prev"}); d.last != want {
		t.Errorf("remembered %+v, want %+v", d.last, want)
	}
	d.remember(attemptsRecord{Attempts: 2, TurnedAway: 1, Trace: "00-this"}) // as recordAttempts wrote it
	if want := (lastDelivery{delivered: 2, consumer: t0, attempts: 2, turnedAway: 1, trace: "00-this"}); d.last != want {
		t.Errorf("remembered %+v, want %+v", d.last, want)
	}
}
