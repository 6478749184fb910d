package queue

import (
	"testing"
	"time"
)

// TestMarkerNamesItsJobMessage: a marker settles a redelivery of its own
// job message only. After the jobs stream was deleted and created again,
// sequences start over: a new message with an old sequence (a forced
// re-run) must be sent, not taken for the finished one.
func TestMarkerNamesItsJobMessage(t *testing.T) {
	at := time.Unix(1_700_000_000, 123)
	d := &Delivery{Seq: 7, stored: at}
	for _, tc := range []struct {
		name string
		m    *DoneMarker
		want bool
	}{
		{"its own message", &DoneMarker{JobSeq: 7, JobTime: at.UnixNano()}, true},
		{"a marker from before job_time", &DoneMarker{JobSeq: 7}, true},
		{"same sequence, another message", &DoneMarker{JobSeq: 7, JobTime: at.Add(-time.Hour).UnixNano()}, false},
		{"another sequence", &DoneMarker{JobSeq: 8, JobTime: at.UnixNano()}, false},
		{"no marker", nil, false},
	} {
		if got := tc.m.settled(d); got != tc.want {
			t.Errorf("%s: settled = %v, want %v", tc.name, got, tc.want)
		}
	}
}
