#!/usr/bin/env bash
# make demo: the whole pipeline on one machine with nothing installed:
# a demo HTTP target, a worker with its embedded NATS server, and the example
# file enqueued with --wait. Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=.demo
NATS_PORT=${DEMO_NATS_PORT:-14222}
TARGET_ADDR=${DEMO_TARGET_ADDR:-127.0.0.1:8088}
rm -rf "$DEMO" && mkdir -p "$DEMO"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_for_line() { # file pattern seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}

echo "==> starting the demo target on $TARGET_ADDR"
bin/demotarget -addr "$TARGET_ADDR" >"$DEMO/target.log" 2>&1 &
pids+=($!)
wait_for_line "$DEMO/target.log" "listening" 10

echo "==> starting a worker with an embedded NATS server on 127.0.0.1:$NATS_PORT (store $DEMO/data)"
# The demo target is on loopback, which jobs may not reach by default (SSRF
# guard); the demo allows it explicitly.
JETPOST_ALLOWED_NETWORKS=127.0.0.0/8 \
JETPOST_EMBEDDED_LISTEN=127.0.0.1:$NATS_PORT \
JETPOST_DATA_DIR=$DEMO/data \
JETPOST_WORKER_ID=demo-worker \
JETPOST_BACKOFF_BASE=200ms \
JETPOST_LOG_FORMAT=console \
  bin/worker >"$DEMO/worker.log" 2>&1 &
pids+=($!)
wait_for_line "$DEMO/worker.log" "consuming jobs" 30

echo "==> enqueue --wait examples/requests.jsonl"
set +e
bin/enqueue --nats "nats://127.0.0.1:$NATS_PORT" --wait --out "$DEMO/results.jsonl" examples/requests.jsonl
status=$?
set -e

echo
echo "==> results ($DEMO/results.jsonl), one per job:"
bin/enqueue show "$DEMO/results.jsonl"
echo
echo "enqueue exited with status $status (1 means some job finally failed, as the example's 404 job does by design)"
echo "worker log: $DEMO/worker.log   target log: $DEMO/target.log"
