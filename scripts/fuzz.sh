#!/usr/bin/env bash
# Runs every native fuzz target for a bounded amount of work ($1, default
# 100000x executions; a duration such as 10s also works for local runs).
#
# Why executions and not seconds: with a duration, go test turns -fuzztime into
# a context deadline, and its fuzzing coordinator sometimes fails the target
# with a bare "context deadline exceeded" when that deadline races a worker's
# last call (golang/go internal/fuzz; seen in our CI on FuzzParseRetryAfter,
# no crasher written). A count has no deadline: a loaded machine only makes it
# slower, never red. A real finding still fails and writes testdata/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000x}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/func //'); do
    echo "==> $pkg $f ($n)"
    go test -run='^$' -fuzz="^$f\$" -fuzztime="$n" "$pkg"
  done
done
