package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
)

// violations keeps the server's permission violations: the server logs each
// while it processes the offending command, so after a client's Flush the
// log has every violation of the commands before it.
type violations struct {
	mu    sync.Mutex
	lines []string
}

func (v *violations) log(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if strings.Contains(line, "Violation - Subject") {
		v.mu.Lock()
		v.lines = append(v.lines, line)
		v.mu.Unlock()
	}
}

func (v *violations) Noticef(format string, args ...any) { v.log(format, args...) }
func (v *violations) Warnf(format string, args ...any)   { v.log(format, args...) }
func (v *violations) Fatalf(format string, args ...any)  { v.log(format, args...) }
func (v *violations) Errorf(format string, args ...any)  { v.log(format, args...) }
func (v *violations) Debugf(format string, args ...any)  { v.log(format, args...) }
func (v *violations) Tracef(format string, args ...any)  { v.log(format, args...) }

func (v *violations) all() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.Join(v.lines, "\n")
}

// roleEnv is how each role authenticates: user and password.
func roleEnv(role string) []string {
	return []string{"JETPOST_NATS_USER=" + role, "JETPOST_NATS_PASSWORD=" + role + "-pw"}
}

// The README's worked example of NATS permissions (examples/nats-
// permissions.conf, loaded as it is): a worker can do its whole job, a
// producer can enqueue (with a priority) but not read results or reach KV
// and the JetStream API beyond what enqueue needs, an operator can read
// the status and pause, resume and cancel a batch but touch no job or
// result, a results consumer can read results and nothing else. Every role
// runs without one permission violation, and each forbidden step is one.
func TestNATSPermissionsForFourRoles(t *testing.T) {
	for _, role := range []string{"WORKER", "PRODUCER", "RESULTS", "ADMIN", "CONSOLE"} {
		t.Setenv("JETPOST_"+role+"_PASSWORD", strings.ToLower(role)+"-pw")
	}
	opts, err := server.ProcessConfigFile("../examples/nats-permissions.conf")
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.RunServerWith(t, opts)
	var denied violations
	ns.SetLoggerV2(&denied, false, false, false)
	url := ns.ClientURL()

	srv := httptest.NewServer(target.New(target.Options{}))
	defer srv.Close()
	w := start(t, "worker", workerEnv(url, append(roleEnv("worker"), "JETPOST_REPLY_PREFIXES=replies")...))
	w.waitLine("consuming jobs")

	const n = 11
	file := writeJobs(t, n-1, srv.URL)
	// One job copies its result to a reply_to subject the worker may use.
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, `{"id":"with-reply","url":"%s/r","reply_to":"replies.perm"}`+"\n", srv.URL)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runEnqueue(t, append(roleEnv("producer"), "JETPOST_REPLY_PREFIXES=replies"), "--nats", url, "--batch", "perm", "--priority", "high", file)
	if code != 0 {
		t.Fatalf("producer: enqueue exit %d: %s\nviolations:\n%s", code, stderr, denied.all())
	}
	waitResults(t, url, "perm", n)
	out := filepath.Join(t.TempDir(), "results.jsonl")
	code, _, stderr = runEnqueue(t, roleEnv("results"), "results", "perm", "--nats", url, "--out", out)
	if code != 0 {
		t.Fatalf("results consumer: enqueue results exit %d: %s\nviolations:\n%s", code, stderr, denied.all())
	}
	res := readResults(t, out)
	for id, r := range res {
		if !r.OK {
			t.Errorf("job %s: %+v", id, r)
		}
	}
	if len(res) != n {
		t.Errorf("%d results, want %d", len(res), n)
	}
	for _, args := range [][]string{{"status"}, {"status", "perm", "--json"}, {"pause", "perm"}, {"resume", "perm"}, {"cancel", "perm", "--wait"}} {
		began := time.Now()
		code, stdout, stderr := runEnqueue(t, roleEnv("admin"), append(args, "--nats", url)...)
		if code != 0 {
			t.Fatalf("admin: enqueue %s exit %d: %s%s\nviolations:\n%s", args, code, stdout, stderr, denied.all())
		}
		t.Logf("admin: enqueue %s took %.2fs", args, time.Since(began).Seconds())
	}
	// The producer reads the batch's entry: a cancelled batch is refused.
	if code, _, stderr := runEnqueue(t, append(roleEnv("producer"), "JETPOST_REPLY_PREFIXES=replies"), "--nats", url, "--batch", "perm", file); code != 5 {
		t.Fatalf("producer: enqueue into a cancelled batch: exit %d, want 5: %s", code, stderr)
	}
	if v := denied.all(); v != "" {
		t.Fatalf("permission violations while each role did its job:\n%s", v)
	}

	forbidden := map[string][]string{
		"producer": {"sub jetpost.results.>", "pub jetpost.results.perm", "pub jetpost.dlq.perm",
			"pub $KV.JETPOST_ATTEMPTS.x", "pub $KV.JETPOST_DONE.x", "pub $JS.API.STREAM.PURGE.JETPOST_JOBS",
			"pub $JS.API.STREAM.UPDATE.JETPOST_RESULTS", "pub $JS.API.CONSUMER.CREATE.JETPOST_RESULTS.x",
			"pub $JS.API.CONSUMER.MSG.NEXT.JETPOST_JOBS.workers", "pub $JS.API.STREAM.MSG.GET.JETPOST_RESULTS",
			"pub $JS.API.CONSUMER.PAUSE.JETPOST_JOBS.batch_perm", "pub jetpost.fleet.batch", "pub $JS.API.STREAM.PURGE.KV_JETPOST_BATCHES"},
		"admin": {"pub jetpost.jobs.perm", "pub jetpost.results.perm", "sub jetpost.results.>", "sub jetpost.fleet.batch",
			"pub $KV.JETPOST_DONE.x", "pub $JS.API.STREAM.PURGE.JETPOST_JOBS", "pub $JS.API.STREAM.DELETE.KV_JETPOST_BATCHES",
			"pub $JS.API.CONSUMER.MSG.NEXT.JETPOST_JOBS.batch_perm", "pub $JS.API.CONSUMER.CREATE.JETPOST_JOBS.x.jetpost.jobs.perm"},
		"results": {"pub jetpost.jobs.perm", "pub jetpost.results.perm", "sub jetpost.jobs.>",
			"pub $KV.JETPOST_DONE.x", "pub $JS.API.STREAM.PURGE.JETPOST_RESULTS",
			"pub $JS.API.CONSUMER.CREATE.JETPOST_JOBS.x", "pub $JS.API.STREAM.INFO.JETPOST_DLQ"},
		"worker": {"pub jetpost.jobs.perm", "pub $JS.API.STREAM.PURGE.JETPOST_JOBS", "pub $JS.API.STREAM.DELETE.JETPOST_RESULTS",
			"pub $JS.API.STREAM.PURGE.KV_JETPOST_BATCHES", "pub $JS.API.CONSUMER.CREATE.JETPOST_JOBS.x.other.subject",
			"pub other.subject"},
	}
	for role, steps := range forbidden {
		checkRefused(t, url, &denied, role, steps)
	}
}

// checkRefused takes each step ("pub SUBJECT" or "sub SUBJECT") as role and
// requires the server to have refused it.
func checkRefused(t *testing.T, url string, denied *violations, role string, steps []string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(role, role+"-pw"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, step := range steps {
		verb, subject, _ := strings.Cut(step, " ")
		if verb == "sub" {
			_, err = nc.SubscribeSync(subject)
		} else {
			err = nc.Publish(subject, []byte("{}"))
		}
		if err == nil {
			err = nc.Flush() // the server has judged the step once it answers
		}
		if err != nil {
			t.Fatalf("%s: %s: %v", role, step, err)
		}
		kind := map[string]string{"pub": "Publish", "sub": "Subscription"}[verb]
		if want := fmt.Sprintf("%s Violation - Subject %q", kind, subject); !strings.Contains(denied.all(), want) {
			t.Errorf("%s may %s", role, step)
		}
	}
}

// waitResults waits, as the results consumer, for n results of batch.
func waitResults(t *testing.T, url, batch string, n int) {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo("results", "results-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // bounds a broken test only
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "JETPOST_RESULTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"jetpost.results." + batch}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := cons.Next(jetstream.FetchContext(ctx)); err != nil {
			t.Fatalf("result %d of %d: %v", i+1, n, err)
		}
	}
}
