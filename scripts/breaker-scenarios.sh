#!/usr/bin/env bash
# Issue 12's breaker scenarios with the real binaries and default settings
# (JETPOST_MAX_ATTEMPTS=4, JETPOST_MAX_INFLIGHT=40, a target answering in
# 50 ms): 100 jobs on one host, either 1 in 10 aimed at an always-503
# endpoint ("mixed") or all failing ("down"). Prints the wall time of
# `enqueue --wait` (capped at CAP seconds) and the results by outcome.
#   usage: scripts/breaker-scenarios.sh BINDIR mixed|down [CAP]
set -euo pipefail
bin=$(cd "$1" && pwd); scen=$2; cap=${3:-300}
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tport=$(free_port); nport=$(free_port)

"$bin/demotarget" -addr "127.0.0.1:$tport" -latency 50ms >"$dir/target.log" 2>&1 &
pids+=($!)
env -i PATH="$PATH" JETPOST_EMBEDDED_LISTEN="127.0.0.1:$nport" JETPOST_DATA_DIR="$dir/data" \
  JETPOST_ALLOWED_NETWORKS=127.0.0.0/8 JETPOST_MAX_INFLIGHT=40 JETPOST_MAX_ATTEMPTS=4 JETPOST_LOG_FORMAT=json \
  "$bin/worker" >"$dir/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "consuming jobs" "$dir/worker.log" && break; sleep 0.1; done

for i in $(seq 0 99); do
  path="/orders/$i"
  if [ "$scen" = down ] || [ $((i % 10)) = 9 ]; then path="/orders/7?status=503&n=$i"; fi
  echo "{\"id\":\"$scen-$i\",\"url\":\"http://127.0.0.1:$tport$path\"}"
done >"$dir/jobs.jsonl"

start=$(date +%s.%N)
rc=0
timeout "$cap" env -i PATH="$PATH" JETPOST_NATS_URL="nats://127.0.0.1:$nport" \
  "$bin/enqueue" --wait --out "$dir/results.jsonl" "$dir/jobs.jsonl" >/dev/null 2>"$dir/enqueue.err" || rc=$?
end=$(date +%s.%N)
echo "$scen: enqueue exit $rc after $(python3 -c "print(round($end - $start, 1))") s (cap $cap s)"
grep -E "results:|breakers opened" "$dir/enqueue.err" || true
python3 - "$dir/results.jsonl" <<'PY'
import collections, json, sys
by = collections.Counter()
for line in open(sys.argv[1]):
    r = json.loads(line)
    by["ok" if r["ok"] else "failed %s, %d attempts" % (r.get("reason", ""), r["attempts"])] += 1
print("%d results of 100: %s" % (sum(by.values()), dict(sorted(by.items()))))
PY
