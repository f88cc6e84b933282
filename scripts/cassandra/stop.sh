#!/usr/bin/env bash
# Stops the Cassandra that scripts/cassandra/start.sh started in DIR (by its recorded pid).
set -euo pipefail
DIR="${1:-target/cassandra}"
[[ -f "$DIR/pid" ]] || exit 0
pid=$(cat "$DIR/pid")
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
fi
rm -f "$DIR/pid"
