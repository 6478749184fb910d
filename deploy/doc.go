// Package deploy holds what operators deploy beside the workers, and the
// test that keeps it true to the code: a Grafana dashboard
// (grafana/jetpost.json), Prometheus alert rules (prometheus/alerts.yml)
// and scrape configuration (prometheus/prometheus.yml), and a KEDA
// ScaledObject that scales workers on the jobs ready to send now
// (keda/scaledobject.yaml). The test parses every PromQL expression in them
// with Prometheus' own parser and checks each metric name against the
// metrics a worker built by internal/worker/daemon registers. README
// "Dashboards and alerts" and "Autoscaling" explain them.
package deploy
