package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// The dashboard's shape: what Grafana needs of each panel and variable.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                 `json:"id"`
	Type       string              `json:"type"`
	Title      string              `json:"title"`
	GridPos    *struct{ H, W int } `json:"gridPos"`
	Datasource json.RawMessage     `json:"datasource"`
	Targets    []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// labelValues is a query variable's label_values(SELECTOR, LABEL).
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)

// dashboardExprs checks the dashboard's shape and returns its panels' and
// variables' expressions, variables substituted as Grafana would.
func dashboardExprs(t *testing.T, b []byte) []expr {
	t.Helper()
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana/jetpost.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion == 0 || len(d.Panels) == 0 {
		t.Errorf("grafana/jetpost.json: title %q, uid %q, schemaVersion %d, %d panels: want all set", d.Title, d.UID, d.SchemaVersion, len(d.Panels))
	}
	var out []expr
	ids := map[int]bool{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("grafana/jetpost.json panel %q", p.Title)
			if p.Title == "" || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 || ids[p.ID] {
				t.Errorf("%s (id %d): want a title, a grid position and a unique id", where, p.ID)
			}
			ids[p.ID] = true
			if p.Type != "row" && (len(p.Targets) == 0 || len(p.Datasource) == 0) {
				t.Errorf("%s: want a datasource and at least one query", where)
			}
			refs := map[string]bool{}
			for _, q := range p.Targets {
				if q.RefID == "" || refs[q.RefID] || q.Expr == "" {
					t.Errorf("%s: query %q with refId %q: want an expression and a unique refId", where, q.Expr, q.RefID)
				}
				refs[q.RefID] = true
				out = append(out, expr{where: where + " " + q.RefID, promql: substitute(q.Expr)})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("grafana/jetpost.json variable %s: %v", v.Name, err)
			continue
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("grafana/jetpost.json variable %s: %q, want label_values(SELECTOR, LABEL)", v.Name, q.Query)
			continue
		}
		out = append(out, expr{where: "grafana/jetpost.json variable " + v.Name, promql: substitute(m[1])})
	}
	return out
}

// The alert rules' shape, as Prometheus reads a rule file.
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var severities = map[string]bool{"critical": true, "warning": true, "info": true}

// templateFuncs are the functions Prometheus offers alert templates that
// the rules use.
var templateFuncs = template.FuncMap{
	"humanize": fmt.Sprint, "humanizePercentage": fmt.Sprint, "humanizeDuration": fmt.Sprint,
}

// alertVars is what Prometheus puts before an alert's templates.
const alertVars = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"

// ruleExprs checks the rule file's structure (no unknown field, unique
// group and alert names, durations, labels, annotation templates) and
// returns its expressions.
func ruleExprs(t *testing.T, b []byte) []expr {
	t.Helper()
	var f ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("prometheus/alerts.yml: %v", err)
	}
	if len(f.Groups) == 0 {
		t.Fatal("prometheus/alerts.yml: no groups")
	}
	var out []expr
	groups, alerts := map[string]bool{}, map[string]bool{}
	for _, g := range f.Groups {
		if g.Name == "" || groups[g.Name] || len(g.Rules) == 0 {
			t.Errorf("prometheus/alerts.yml group %q: want a unique name and rules", g.Name)
		}
		groups[g.Name] = true
		checkDuration(t, "group "+g.Name+" interval", g.Interval)
		for _, r := range g.Rules {
			if r.Record != "" {
				out = append(out, recordExpr(t, r.Record, r.Alert, r.For, r.Expr, len(r.Annotations)))
				continue
			}
			where := "prometheus/alerts.yml alert " + r.Alert
			checkWindows(t, where, r.For, r.Expr)
			if r.Alert == "" || alerts[r.Alert] || !model.LegacyValidation.IsValidLabelName(r.Alert) {
				t.Errorf("%s (group %s): want an alert rule with a unique, valid name", where, g.Name)
			}
			alerts[r.Alert] = true
			checkDuration(t, where+" for", r.For)
			if !severities[r.Labels["severity"]] {
				t.Errorf("%s: severity %q, want critical, warning or info", where, r.Labels["severity"])
			}
			for k := range r.Labels {
				if !model.LegacyValidation.IsValidLabelName(k) {
					t.Errorf("%s: label name %q is not valid", where, k)
				}
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary annotation", where)
			}
			for k, v := range r.Annotations {
				if _, err := template.New(k).Funcs(templateFuncs).Parse(alertVars + v); err != nil {
					t.Errorf("%s annotation %s: %v", where, k, err)
				}
			}
			out = append(out, expr{where: where, promql: r.Expr})
		}
	}
	return out
}

// recordExpr checks a recording rule: a valid name of the level:metric
// form, nothing of an alert's.
func recordExpr(t *testing.T, record, alert, forDur, promql string, annotations int) expr {
	t.Helper()
	if !strings.HasPrefix(record, "jetpost:") || !model.LegacyValidation.IsValidMetricName(record) || alert != "" || forDur != "" || annotations != 0 {
		t.Errorf("prometheus/alerts.yml record %q: want a jetpost: name and no alert fields", record)
	}
	return expr{where: "prometheus/alerts.yml record " + record, promql: promql, record: record}
}

// checkWindows refuses an alert whose range window is as long as its for:
// one event stays in such a window for exactly the for: duration, so
// whether it fires depends on evaluation timing. (A longer window is a
// different question, "none in 15 minutes", held for a while.)
func checkWindows(t *testing.T, where, forDur, promql string) {
	t.Helper()
	if forDur == "" {
		checkNoFor(t, where, promql)
		return
	}
	held, err := model.ParseDuration(forDur)
	if err != nil {
		return // checkDuration reports it
	}
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(promql)
	if err != nil {
		return // the metric check reports it
	}
	parser.Inspect(ast, func(n parser.Node, _ []parser.Node) error {
		if ms, ok := n.(*parser.MatrixSelector); ok && ms.Range == time.Duration(held) {
			t.Errorf("%s: window %v as long as its for: %s", where, ms.Range, forDur)
		}
		return nil
	})
}

// checkNoFor refuses an alert without for: unless it counts events over a
// window (increase or rate of a counter): on anything else, a state that
// just began (a gauge's series appears at its first change) fires at once.
func checkNoFor(t *testing.T, where, promql string) {
	t.Helper()
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(promql)
	if err != nil {
		return // the metric check reports it
	}
	counted := false
	parser.Inspect(ast, func(n parser.Node, _ []parser.Node) error {
		if c, ok := n.(*parser.Call); ok {
			if c.Func.Name == "increase" || c.Func.Name == "rate" {
				counted = true
			} else if hasMatrix(c) {
				t.Errorf("%s: %s over a window without for:", where, c.Func.Name)
			}
		}
		return nil
	})
	if !counted {
		t.Errorf("%s: no for: and no count of events: fires as soon as the state begins", where)
	}
}

// hasMatrix reports whether a call takes a range of samples.
func hasMatrix(c *parser.Call) bool {
	for _, a := range c.Args {
		if _, ok := a.(*parser.MatrixSelector); ok {
			return true
		}
	}
	return false
}

func checkDuration(t *testing.T, where, d string) {
	t.Helper()
	if d == "" {
		return
	}
	if _, err := model.ParseDuration(d); err != nil {
		t.Errorf("prometheus/alerts.yml %s: %v", where, err)
	}
}

// The scrape configuration loads the rules and scrapes a job named as the
// rules and the ScaledObject expect.
func TestScrapeConfigMatchesTheRules(t *testing.T) {
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(readFile(t, "prometheus/prometheus.yml"), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.RuleFiles) != 1 || cfg.RuleFiles[0] != "alerts.yml" || len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].JobName != "jetpost" {
		t.Errorf("prometheus/prometheus.yml: rule files %v, scrape configs %+v: want alerts.yml and job jetpost", cfg.RuleFiles, cfg.ScrapeConfigs)
	}
}

// The ScaledObject's fields this test relies on.
type scaledObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Spec       struct {
		MinReplicaCount int `yaml:"minReplicaCount"`
		MaxReplicaCount int `yaml:"maxReplicaCount"`
		Triggers        []struct {
			Type       string            `yaml:"type"`
			MetricType string            `yaml:"metricType"`
			Metadata   map[string]string `yaml:"metadata"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

// scaledObjectExprs checks the KEDA example (a Prometheus trigger averaged
// per worker, at least one worker to report the figures) and returns its
// query.
func scaledObjectExprs(t *testing.T, b []byte) []expr {
	t.Helper()
	var so scaledObject
	if err := yaml.Unmarshal(b, &so); err != nil {
		t.Fatalf("keda/scaledobject.yaml: %v", err)
	}
	if so.APIVersion != "keda.sh/v1alpha1" || so.Kind != "ScaledObject" || so.Spec.MinReplicaCount < 1 || so.Spec.MaxReplicaCount < so.Spec.MinReplicaCount {
		t.Errorf("keda/scaledobject.yaml: %s %s, replicas %d..%d: want a keda.sh/v1alpha1 ScaledObject with at least one replica",
			so.APIVersion, so.Kind, so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount)
	}
	var out []expr
	for _, tr := range so.Spec.Triggers {
		if tr.Type != "prometheus" || tr.MetricType != "AverageValue" {
			t.Errorf("keda/scaledobject.yaml: trigger %s (%s), want prometheus with AverageValue", tr.Type, tr.MetricType)
		}
		if v, err := strconv.ParseFloat(tr.Metadata["threshold"], 64); err != nil || v <= 0 {
			t.Errorf("keda/scaledobject.yaml: threshold %q, want a positive number", tr.Metadata["threshold"])
		}
		q := tr.Metadata["query"]
		for _, must := range []string{"sum(jetpost:ready_undelivered", "sum(jetpost_ready_held", "sum(jetpost_requests_in_flight"} {
			if !strings.Contains(q, must) {
				t.Errorf("keda/scaledobject.yaml: query lacks %s…)", must)
			}
		}
		out = append(out, expr{where: "keda/scaledobject.yaml query", promql: q})
	}
	if len(out) == 0 {
		t.Error("keda/scaledobject.yaml: no trigger")
	}
	return out
}
