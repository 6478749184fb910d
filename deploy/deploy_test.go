package deploy_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/jetpost/jetpost/internal/config"
	"github.com/jetpost/jetpost/internal/leakcheck"
	"github.com/jetpost/jetpost/internal/metrics"
	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/worker/daemon"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// An expression found in a deployment file, and where.
type expr struct {
	where, promql string
	record        string // the series a recording rule makes of it
}

// Every PromQL expression of the dashboard, the alert rules and the
// ScaledObject parses with Prometheus' own parser and names only metrics a
// worker registers; every jetpost metric a worker registers is on the
// dashboard.
func TestDeployFilesNameRegisteredMetrics(t *testing.T) {
	known := registered(t)
	var all []expr
	dash := dashboardExprs(t, readFile(t, "grafana/jetpost.json"))
	all = append(all, dash...)
	all = append(all, ruleExprs(t, readFile(t, "prometheus/alerts.yml"))...)
	all = append(all, scaledObjectExprs(t, readFile(t, "keda/scaledobject.yaml"))...)
	for _, e := range all {
		for _, err := range known.check(e) {
			t.Error(err)
		}
	}
	onDashboard := map[string]bool{}
	for _, e := range dash {
		names, _ := metricNames(e.promql)
		for _, n := range names {
			onDashboard[known.base(n)] = true
		}
	}
	for name := range known.types {
		if strings.HasPrefix(name, "jetpost_") && !onDashboard[name] {
			t.Errorf("metric %s is registered but on no panel of grafana/jetpost.json", name)
		}
	}
}

// The check fails for a panel that names a metric no worker registers, and
// for an expression Prometheus would refuse.
func TestCheckRefusesUnknownMetricsAndBadPromQL(t *testing.T) {
	known := registered(t)
	dash := readFile(t, "grafana/jetpost.json")
	broken := strings.Replace(string(dash), "jetpost_jobs_total{", "jetpost_job_total{", 1)
	var errs []error
	for _, e := range dashboardExprs(t, []byte(broken)) {
		errs = append(errs, known.check(e)...)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `"jetpost_job_total"`) {
		t.Errorf("a panel naming jetpost_job_total: errors %v, want one naming it", errs)
	}
	for _, bad := range []string{`rate(jetpost_jobs_total)`, `sum(jetpost_breaker_state{host="a"}`, `jetpost_request_duration_seconds_total`} {
		if errs := known.check(expr{where: "test", promql: bad}); len(errs) == 0 {
			t.Errorf("%s: no error, want one", bad)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// metricSet is what a worker registers: each metric's name and, for those
// that have samples at once, its type.
type metricSet struct {
	types map[string]string // name → counter, gauge, histogram, summary, untyped ("" unknown)
}

// Prometheus makes these itself, for every scrape target.
var synthetic = []string{"up", "scrape_duration_seconds", "scrape_samples_scraped"}

// registered builds a worker as cmd/worker does (daemon.Build against a
// real server) and lists every metric its registry holds, with the types
// of those that have samples at once.
func registered(t *testing.T) *metricSet {
	t.Helper()
	ns := natstest.RunServer(t)
	t.Setenv("JETPOST_NATS_URL", ns.ClientURL())
	t.Setenv("JETPOST_RATE_LIMITS", "api.example.com=10/s")
	cfg, err := config.LoadWorker()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mx *metrics.Metrics
	// Built, not run: every metric is registered by then.
	if _, err := daemon.Build(ctx, cfg, nc, daemon.Options{Log: zerolog.Nop(), Metrics: func(m *metrics.Metrics) { mx = m }}); err != nil {
		t.Fatal(err)
	}
	set := &metricSet{types: map[string]string{}}
	for _, d := range mx.Descs() {
		m := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		set.types[m[1]] = ""
	}
	families, err := mx.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		set.types[f.GetName()] = strings.ToLower(f.GetType().String())
	}
	for _, n := range synthetic {
		set.types[n] = "gauge"
	}
	// The recording rules' series are there for the other expressions.
	var rules ruleFile
	if err := yaml.Unmarshal(readFile(t, "prometheus/alerts.yml"), &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				set.types[r.Record] = "recorded"
			}
		}
	}
	return set
}

// base is the registered metric a series name belongs to: a histogram's
// _bucket, _sum and _count and a summary's _sum and _count belong to it,
// and a counter registered without _total is exposed with it in
// OpenMetrics. "" when it belongs to none.
func (s *metricSet) base(name string) string {
	if _, ok := s.types[name]; ok {
		return name
	}
	for suffix, types := range map[string][]string{
		"_bucket": {"histogram"}, "_sum": {"histogram", "summary"}, "_count": {"histogram", "summary"}, "_total": {"counter"},
	} {
		b, ok := strings.CutSuffix(name, suffix)
		if ok && slices.Contains(types, s.types[b]) {
			return b
		}
	}
	return ""
}

// check parses e and reports every metric it names that no worker
// registers.
func (s *metricSet) check(e expr) []error {
	names, err := metricNames(e.promql)
	if err != nil {
		return []error{fmt.Errorf("%s: %w\n%s", e.where, err, e.promql)}
	}
	var errs []error
	for _, n := range names {
		if s.base(n) == "" {
			errs = append(errs, fmt.Errorf("%s: metric %q is not registered by the worker (%s)", e.where, n, e.promql))
		}
	}
	return errs
}

// metricNames parses promql and returns the metric names its selectors
// name, by name or by __name__.
func metricNames(promql string) ([]string, error) {
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(promql)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(ast, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == "__name__" {
				name = m.Value
			}
		}
		if name == "" {
			err = fmt.Errorf("a selector without a metric name: %s", vs)
		}
		names = append(names, name)
		return nil
	})
	sort.Strings(names)
	return slices.Compact(names), err
}

// grafanaVar matches a dashboard variable: $name or ${name}.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// substitute replaces the dashboard's variables as Grafana would before
// it sends a query: intervals by a duration, max_inflight by its number,
// the others (used in label matchers) by a value.
func substitute(q string) string {
	return grafanaVar.ReplaceAllStringFunc(q, func(v string) string {
		switch grafanaVar.FindStringSubmatch(v)[1] {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		case "max_inflight":
			return "64"
		}
		return "x"
	})
}
