package config

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
)

var update = flag.Bool("update", false, "rewrite the README's environment table from the config structs")

const (
	beginMarker = "<!-- env-table:begin (generated from internal/config; go test ./internal/config -update) -->\n"
	endMarker   = "<!-- env-table:end -->"
)

// The README's table of variables is rendered from the structs; this test
// fails when they drift, and -update rewrites it.
func TestReadmeTableMatchesConfig(t *testing.T) {
	table, err := markdownTable(&Worker{})
	if err != nil {
		t.Fatal(err)
	}
	const path = "../../README.md"
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b := bytes.Index(readme, []byte(beginMarker))
	e := bytes.Index(readme, []byte(endMarker))
	if b < 0 || e < b {
		t.Fatalf("README.md lacks the markers %q ... %q", beginMarker, endMarker)
	}
	current := string(readme[b+len(beginMarker) : e])
	if current == table {
		return
	}
	if *update {
		out := append([]byte{}, readme[:b+len(beginMarker)]...)
		out = append(out, table...)
		out = append(out, readme[e:]...)
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's environment table is out of date; run: go test ./internal/config -update")
}

func setenv(t *testing.T, kv ...string) {
	for i := 0; i < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
}

func TestDefaults(t *testing.T) {
	c, err := LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxInflight != 64 || c.MaxAttempts != 5 || c.AckWait != 30*time.Second || c.SubjectPrefix != "jetpost" ||
		c.EmbeddedListen != "127.0.0.1:4222" || c.DataDir != "./data" || c.EffectivePrefetch() != 16 || c.MaxAckPending != 1000000 {
		t.Errorf("unexpected defaults: %+v", c)
	}
}

func TestUnprefixedVariablesAreIgnored(t *testing.T) {
	// envconfig falls back to unprefixed names for explicit tags; none of
	// ours may pick up a stray WORKER_ID or HTTP_ADDR from the environment.
	setenv(t, "WORKER_ID", "stray", "HTTP_ADDR", ":1", "NATS_URL", "nats://stray:1", "MAX_INFLIGHT", "3")
	c, err := LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	if c.WorkerID != "" || c.HTTPAddr != "" || c.NatsURL != "" || c.MaxInflight != 64 {
		t.Errorf("unprefixed variables leaked in: %+v", c)
	}
}

func TestInvalidValuesNameTheVariable(t *testing.T) {
	cases := []struct {
		env  []string
		want string
	}{
		{[]string{"JETPOST_MAX_INFLIGHT", "many"}, "JETPOST_MAX_INFLIGHT"},
		{[]string{"JETPOST_MAX_INFLIGHT", "0"}, "JETPOST_MAX_INFLIGHT=0"},
		{[]string{"JETPOST_ACK_WAIT", "10ms"}, "JETPOST_ACK_WAIT"},
		{[]string{"JETPOST_ACK_WAIT", "soon"}, "JETPOST_ACK_WAIT"},
		{[]string{"JETPOST_BACKOFF_BASE", "2m"}, "JETPOST_BACKOFF_MAX"},
		{[]string{"JETPOST_SUBJECT_PREFIX", "a.b"}, "JETPOST_SUBJECT_PREFIX"},
		{[]string{"JETPOST_REPLICAS", "7"}, "JETPOST_REPLICAS"},
		{[]string{"JETPOST_LOG_LEVEL", "loud"}, "JETPOST_LOG_LEVEL"},
		{[]string{"JETPOST_NATS_URL", "::nonsense"}, "JETPOST_NATS_URL"},
		{[]string{"JETPOST_NATS_TLS_CERT", "/nonexistent.pem"}, "JETPOST_NATS_TLS_KEY"},
		{[]string{"JETPOST_NATS_CREDS_FILE", "/nonexistent.creds"}, "JETPOST_NATS_CREDS_FILE"},
		{[]string{"JETPOST_MAX_ACK_PENDING", "10"}, "JETPOST_MAX_ACK_PENDING"},
		{[]string{"JETPOST_EMBEDDED_LISTEN", "nope"}, "JETPOST_EMBEDDED_LISTEN"},
		{[]string{"JETPOST_BREAKER_FAILURE_RATIO", "1.5"}, "JETPOST_BREAKER_FAILURE_RATIO=1.5"},
		{[]string{"JETPOST_BREAKER_FAILURE_RATIO", "0"}, "JETPOST_BREAKER_FAILURE_RATIO=0"},
		{[]string{"JETPOST_BREAKER_WINDOW", "10ms"}, "JETPOST_BREAKER_WINDOW"},
	}
	for _, tc := range cases {
		t.Run(tc.env[0]+"="+tc.env[1], func(t *testing.T) {
			setenv(t, tc.env...)
			_, err := LoadWorker()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var b bytes.Buffer
	if err := Usage(&b, &Worker{}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"JETPOST_NATS_URL", "JETPOST_MAX_INFLIGHT", "JETPOST_PREFETCH", "JETPOST_ACK_WAIT", "JETPOST_HTTP_ADDR", "JETPOST_ALLOWED_NETWORKS", "JETPOST_SHUTDOWN_TIMEOUT"} {
		if !strings.Contains(b.String(), v) {
			t.Errorf("usage lacks %s", v)
		}
	}
}

// markdownTable renders what Usage shows as a Markdown table for the README.
func markdownTable(spec any) (string, error) {
	var b strings.Builder
	const tmpl = "| variable | default | meaning |\n|---|---|---|\n{{range .}}| `{{usage_key .}}` | {{with usage_default .}}`{{.}}`{{end}} | {{usage_description .}} |\n{{end}}"
	if err := envconfig.Usagef(Prefix, spec, &b, tmpl); err != nil {
		return "", err
	}
	return b.String(), nil
}

// The console's settings: a short token, a token or console user without
// the address the console is served at, and two console identities are
// each refused with the variable named.
func TestConsoleSettings(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"JETPOST_HTTP_ADDR": ":9090", "JETPOST_CONSOLE_TOKEN": "short"}, "JETPOST_CONSOLE_TOKEN: 5 bytes"},
		{map[string]string{"JETPOST_CONSOLE_TOKEN": "0123456789abcdef"}, "JETPOST_HTTP_ADDR is not"},
		{map[string]string{"JETPOST_CONSOLE_NATS_USER": "console"}, "JETPOST_HTTP_ADDR is not"},
		{map[string]string{"JETPOST_HTTP_ADDR": ":9090", "JETPOST_CONSOLE_NATS_PASSWORD": "pw"}, "needs JETPOST_CONSOLE_NATS_USER"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		if _, err := LoadWorker(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.env, err, tc.want)
		}
		for k := range tc.env {
			t.Setenv(k, "")
		}
	}
	t.Setenv("JETPOST_HTTP_ADDR", ":9090")
	t.Setenv("JETPOST_CONSOLE_TOKEN", "0123456789abcdef")
	t.Setenv("JETPOST_CONSOLE_NATS_USER", "console")
	c, err := LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	if cc, ok := c.ConsoleConnection(); !ok || cc.NatsUser != "console" || cc.NatsURL != c.NatsURL {
		t.Errorf("console connection %+v, %v", cc, ok)
	}
}
