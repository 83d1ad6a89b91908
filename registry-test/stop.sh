#!/usr/bin/env bash
# Stop the registry started by registry-test/start.sh and remove its state (storage included).
#   registry-test/stop.sh           # KBUNDLE_REGISTRY_STATE as for start.sh
#   registry-test/stop.sh --keep    # stop, but keep the state directory (storage, log, config)
set -euo pipefail
state=${KBUNDLE_REGISTRY_STATE:-${TMPDIR:-/tmp}/kbundle-registry}
pidfile="$state/registry.pid"
if [ ! -f "$pidfile" ]; then
  echo "registry-test/stop.sh: no $pidfile; nothing to stop" >&2
  exit 0
fi
pid=$(cat "$pidfile")
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  echo "registry-test/stop.sh: stopped pid $pid"
else
  echo "registry-test/stop.sh: pid $pid was not running"
fi
rm -f "$pidfile"
if [ "${1:-}" != "--keep" ]; then rm -rf "$state"; fi
