package console

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/queue"
	"github.com/jetpost/jetpost/internal/workertest"
	"github.com/jetpost/jetpost/pkg/job"
)

// waitUntil polls cond (a liveness guard: a generous bound, not a speed
// limit).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

func subjectCount(t *testing.T, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), stream)
	if err != nil {
		return 0
	}
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0
	}
	return info.State.Subjects[subject]
}

// Dead letters listed by the console carry what the page shows (id, URL,
// reason, status) and no secret (the job's headers, a secret query
// parameter) nor the job's or the response's body; a re-drive
// from the console sends them again, and once the target answers, the
// dead-letter stream is empty and every job has an ok result.
func TestDeadLettersRedactedAndRedriven(t *testing.T) {
	ns := natstest.RunServer(t)
	var healthy atomic.Bool
	tgt := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte("response-body-secret"))
		}
	}))
	defer tgt.Close()
	workertest.Start(t, ns.ClientURL(), workertest.Options{})
	r := newRig(t, ns, testToken)
	names := workertest.Names()
	for i := range 3 {
		r.publish(t, &job.Job{ID: "dl-" + string(rune('a'+i)), Batch: "d", Method: "GET", URL: tgt.URL + "/x?api_key=query-secret",
			Headers:    map[string]string{"Authorization": "Bearer header-secret", "X-Api-Key": "configured-secret"},
			JSON:       json.RawMessage(`{"card":"job-body-secret"}`),
			EnqueuedAt: time.Now().UTC()})
	}
	waitUntil(t, "three dead letters", func() bool { return subjectCount(t, r.js, names.DLQStream(), names.DLQSubject("d")) == 3 })

	code, body, _ := r.do(t, "GET", "/api/deadletters/d?limit=2", nil)
	if code != http.StatusOK || strings.Contains(body, "secret") {
		t.Fatalf("dead letters: %d %s", code, body)
	}
	if strings.Contains(body, `"job"`) || strings.Contains(body, `"body"`) {
		t.Errorf("the listing carries a job or a response body: %s", body)
	}
	var list struct {
		DeadLetters []struct {
			ID         string     `json:"id"`
			URL        string     `json:"url"`
			Reason     job.Reason `json:"reason"`
			LastStatus int        `json:"last_status"`
			Message    string     `json:"message"`
		} `json:"dead_letters"`
		More bool `json:"more"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.DeadLetters) != 2 || !list.More {
		t.Errorf("limit 2 of 3: %d listed, more=%v", len(list.DeadLetters), list.More)
	}
	for _, dl := range list.DeadLetters {
		if dl.Reason != job.ReasonPermanent || dl.LastStatus != http.StatusBadRequest || dl.Message == "" ||
			!strings.HasPrefix(dl.ID, "dl-") || !strings.HasPrefix(dl.URL, tgt.URL+"/x?api_key=") {
			t.Errorf("dead letter %+v, want reason permanent, status 400 and the error", dl)
		}
	}

	healthy.Store(true)
	code, body, _ = r.do(t, "POST", "/api/batches/d/redrive", map[string]string{"Authorization": "Bearer " + testToken})
	var rep queue.RedriveReport
	if code != http.StatusOK || json.Unmarshal([]byte(body), &rep) != nil || rep.Redriven != 3 {
		t.Fatalf("re-drive: %d %s", code, body)
	}
	waitUntil(t, "an ok result for each re-driven job", func() bool {
		return subjectCount(t, r.js, names.ResultsStream(), names.ResultSubject("d")) == 6
	})
	if n := subjectCount(t, r.js, names.DLQStream(), names.DLQSubject("d")); n != 0 {
		t.Errorf("%d dead letters left after the re-drive", n)
	}
}
