package deploy_test

import (
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// aggregations maps each metric a PromQL expression selects to the
// aggregations directly around its selectors (sum, max…).
func aggregations(t *testing.T, promql string) map[string][]string {
	t.Helper()
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(promql)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	parser.Inspect(ast, func(n parser.Node, path []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		op := "none"
		for i := len(path) - 1; i >= 0; i-- {
			if a, ok := path[i].(*parser.AggregateExpr); ok {
				op = a.Op.String()
				break
			}
		}
		out[vs.Name] = append(out[vs.Name], op)
		return nil
	})
	return out
}

// The fleet's ready backlog takes the stream's undelivered count once
// (max over workers, which all report it) and the refused share from the
// decision windows summed over workers: no one worker's estimate stands
// for the fleet (max over estimates picked the lowest share, and a worker
// with no decisions yet claimed the whole backlog).
func TestReadyBacklogRuleAggregates(t *testing.T) {
	rules := map[string]string{}
	for _, e := range ruleExprs(t, readFile(t, "prometheus/alerts.yml")) {
		if e.record != "" {
			rules[e.record] = e.promql
		}
	}
	want := map[string]string{
		"jetpost_batch_undelivered": "max", "jetpost_batch_decided": "sum", "jetpost_batch_refused": "sum",
	}
	got := aggregations(t, rules["jetpost:batch_ready"])
	if len(got) != len(want) {
		t.Errorf("jetpost:batch_ready selects %v, want exactly %v", got, want)
	}
	for name, op := range want {
		if len(got[name]) == 0 {
			t.Errorf("jetpost:batch_ready does not select %s", name)
		}
		for _, g := range got[name] {
			if g != op {
				t.Errorf("jetpost:batch_ready: %s under %s, want %s", name, g, op)
			}
		}
	}
	if got := aggregations(t, rules["jetpost:ready_undelivered"]); len(got) != 1 || len(got["jetpost:batch_ready"]) != 1 || got["jetpost:batch_ready"][0] != "sum" {
		t.Errorf("jetpost:ready_undelivered selects %v, want the sum of jetpost:batch_ready", got)
	}
}
