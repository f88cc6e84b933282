#!/usr/bin/env bash
# The issue-2 performance scenarios, each against a fresh release server on loopback:
#   big      1 room x 2,000 subscribers + 1 publisher, rate steps
#   private  5,000 rooms x 2 members, every connection publishing, rate steps
#   idle     18,000 connections in 1,000 rooms, server RSS per connection
#   churn    200 connect+join+close per second for 20 s: failures, leftovers, RSS
#   members  one room of 500 / 1,000 / 2,000 / 4,000 members (2 driver processes)
#   conns    idle 5,000 / 10,000 / 19,500 connections (2 driver processes)
# Usage: bash loadtest/scenarios.sh [big|private|idle|churn|members|conns ...];
# results in target/perf/ (or $PERF_OUT). SERVER_BIN runs another server build (for a
# before/after comparison in one sitting) with this tree's driver.
# The server runs with the full product on the path (auth, rate limit with a raised
# quota, moderation with a blocked-word list, history with fsync, metrics). Bounded:
# each step 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p roomcast-server -p roomcast-loadtest
out=${PERF_OUT:-target/perf}; mkdir -p "$out"
server_bin=${SERVER_BIN:-target/release/roomcast}
secret=load-secret-0123456789abcdef
port=${PORT:-9200}
# Moderation on the path: 40 blocked words, so every message is scanned.
blocked=$(printf 'blockedword%02d,' $(seq 1 40))
ulimit -n 20000

run() {
  local name=$1; shift
  rm -rf "$out/data-$name"
  JWT_SECRET=$secret PORT=$port ROOMCAST_BIND=127.0.0.1 ROOMCAST_DATA_DIR="$out/data-$name" \
    RATE_LIMIT_MAX_MESSAGES=100000000 ROOMCAST_CONNECT_RATE_PER_IP=1000000 RUST_LOG=warn \
    ROOMCAST_BLOCKED_WORDS="$blocked" \
    "$server_bin" >"$out/$name.server.out" 2>"$out/$name.server.err" &
  local pid=$!
  for _ in $(seq 100); do grep -q listening "$out/$name.server.out" 2>/dev/null && break; sleep 0.1; done
  target/release/roomcast-load "$@" --url ws://127.0.0.1:$port --secret $secret --server-pid $pid \
    >"$out/$name.jsonl" 2>"$out/$name.txt" || true
  # The server's own account of the run (disconnect reasons, slow consumers, ...).
  curl -s "http://127.0.0.1:$port/metrics" >"$out/$name.metrics" || true
  kill $pid; wait $pid 2>/dev/null || true
  echo "== $name"; cat "$out/$name.txt"
}

for s in "${@:-big private idle}"; do
  for scenario in $s; do
    case $scenario in
      big) run big room --rooms 1 --members 2001 --publishers 1 --rates 25,50,100,150,200,250 --step-secs 10 --procs 2 ;;
      private) run private room --rooms 5000 --members 2 --publishers 2 --rates 1000,5000,10000,15000,20000 --step-secs 10 --procs 2 ;;
      idle) run idle idle --connections 18000 --rooms 1000 --hold-secs 5 --procs 2 ;;
      churn) run churn churn --rate 200 --duration-secs 20 --rooms 100 ;;
      members)
        for m in 500 1000 2000 4000; do
          run "members-$m" room --rooms 1 --members $((m + 1)) --publishers 1 --rates 25,50,100,150,200 --step-secs 10 --procs 2
        done ;;
      conns)
        for n in 5000 10000 19500; do
          run "conns-$n" idle --connections $n --rooms 1000 --hold-secs 5 --procs 2
        done ;;
      *) echo "unknown scenario $scenario" >&2; exit 2 ;;
    esac
  done
done
