package target_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"testing"

	"github.com/jetpost/jetpost/internal/target"
	"github.com/jetpost/jetpost/pkg/job"
)

// The demo file must show what it claims against a real target: every job
// ends within a couple of retries (default backoff starts at 1s, so an
// always-failing job would make the demo take minutes), fail_first jobs
// succeed after exactly fail_first+1 attempts and status=4xx jobs fail at
// once. Retries here are immediate; only the attempt counts matter.
func TestExampleRequestsBehaveAsAdvertised(t *testing.T) {
	const file = "../../examples/requests.jsonl"
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	tg, srv := newServer(t, target.Options{})
	base, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}

	sc := bufio.NewScanner(f)
	line, withoutID := 0, 0
	for sc.Scan() {
		line++
		var j job.Job
		if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
			t.Fatalf("%s:%d: %v", file, line, err)
		}
		if j.ID == "" {
			withoutID++
			j.ID = fmt.Sprintf("line-%d", line) // enqueue derives one
		}
		if j.Method == "" {
			j.Method = http.MethodGet
		}
		if err := j.Validate(); err != nil {
			t.Fatalf("%s:%d: %v", file, line, err)
		}
		u, err := url.Parse(j.URL)
		if err != nil {
			t.Fatal(err)
		}
		if u.Host != "127.0.0.1:8088" {
			t.Errorf("%s:%d: host %s, want the demo target 127.0.0.1:8088", file, line, u.Host)
		}
		u.Scheme, u.Host = base.Scheme, base.Host

		attempts, status := 0, 0
		for attempts < 5 {
			attempts++
			status = send(t, srv.Client(), &j, u.String())
			if !retryable(status) {
				break
			}
		}
		q := u.Query()
		failFirst, _ := strconv.Atoi(q.Get("fail_first"))
		switch {
		case status >= 400 && retryable(status):
			t.Errorf("%s:%d (%s): still failing with %d after %d attempts", file, line, j.ID, status, attempts)
		case q.Has("status"):
			if want, _ := strconv.Atoi(q.Get("status")); status != want || attempts != 1 {
				t.Errorf("%s:%d (%s): %d after %d attempts, want %d at once", file, line, j.ID, status, attempts, want)
			}
		case status < 200 || status > 299 || attempts != failFirst+1:
			t.Errorf("%s:%d (%s): %d after %d attempts, want 2xx after %d", file, line, j.ID, status, attempts, failFirst+1)
		}
		if failFirst > 2 {
			t.Errorf("%s:%d (%s): fail_first=%d makes the demo wait too long", file, line, j.ID, failFirst)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if line < 10 || withoutID == 0 {
		t.Errorf("%d jobs, %d without id: the demo should show ~12 jobs, some without id", line, withoutID)
	}
	if s := tg.Stats(); s.Duplicates != 0 {
		t.Errorf("%d duplicate sends in a retry-only replay", s.Duplicates)
	}
}

func send(t *testing.T, c *http.Client, j *job.Job, u string) int {
	t.Helper()
	body, ctype := j.Body()
	req, err := http.NewRequestWithContext(t.Context(), j.Method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range j.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Idempotency-Key", j.ID)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// retryable mirrors jetpost's default policy: 408, 425, 429 and 5xx.
func retryable(status int) bool {
	return status == 408 || status == 425 || status == 429 || status >= 500
}
