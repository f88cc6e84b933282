#!/usr/bin/env bash
# Cross-node figures (issue 11) beside single-node, in one sitting, on the CQL store:
#   big1      1 room x 2,000 subscribers + 1 publisher, one node
#   big2      the same room, members alternating over two nodes (Redis bus)
#   private1  2,500 rooms x 2 members, every connection publishing, one node
#   private2  the same, the two members of each room on different nodes
# Every node runs the release build with the full product on the path (as
# loadtest/scenarios.sh) against one Apache Cassandra 5.0 (scripts/cassandra/start.sh)
# and, for two nodes, one redis-server on a free port. Results in target/perf/
# (or $PERF_OUT): NAME.txt (the driver's table), NAME.jsonl, NAME.node*.metrics.
# CPU per delivery sums every node's CPU (not Cassandra's or Redis').
# Usage: bash loadtest/cluster.sh [big1 big2 private1 private2 ...]. Bounded: 10 s steps.
# BIG_RATES / PRIVATE_RATES (comma-separated msgs/s) replace the default steps.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p roomcast-server -p roomcast-loadtest
out=${PERF_OUT:-target/perf}; mkdir -p "$out"
bin=target/release/roomcast
secret=load-secret-0123456789abcdef
blocked=$(printf 'blockedword%02d,' $(seq 1 40))
ulimit -n 20000

cql=${ROOMCAST_TEST_CQL:-}
started_cql=0
if [ -z "$cql" ]; then
  cql=$(bash scripts/cassandra/start.sh target/cassandra | tail -n 1)
  started_cql=1
fi
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.out" 2>&1 &
redis_pid=$!
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  kill "$redis_pid" 2>/dev/null || true
  if [ "$started_cql" = 1 ]; then bash scripts/cassandra/stop.sh target/cassandra; fi
}
trap cleanup EXIT

# run NAME NODES driver-args...: fresh keyspace, NODES nodes, the driver, metrics.
run() {
  local name=$1 nodes=$2; shift 2
  local ks="perf_${name}_$$"
  local common=(JWT_SECRET=$secret ROOMCAST_BIND=127.0.0.1 RATE_LIMIT_MAX_MESSAGES=100000000
    ROOMCAST_CONNECT_RATE_PER_IP=1000000 RUST_LOG=warn ROOMCAST_BLOCKED_WORDS="$blocked"
    ROOMCAST_SCYLLA_NODES=$cql ROOMCAST_SCYLLA_KEYSPACE=$ks ROOMCAST_SCYLLA_CONSISTENCY=one
    "ROOMCAST_SCYLLA_REPLICATION={'class': 'SimpleStrategy', 'replication_factor': 1}")
  env "${common[@]}" "$bin" migrate >"$out/$name.migrate" 2>&1
  local urls="" pidlist=""
  pids=()
  for n in $(seq 0 $((nodes - 1))); do
    local port=$((9300 + n)) extra=()
    if [ "$nodes" -gt 1 ]; then extra=(REDIS_URL=redis://127.0.0.1:$redis_port); fi
    env "${common[@]}" "${extra[@]}" PORT=$port ROOMCAST_DATA_DIR="$out/data-$name-$n" \
      "$bin" >"$out/$name.node$n.out" 2>"$out/$name.node$n.err" &
    pids+=($!)
    urls+="${urls:+,}ws://127.0.0.1:$port"; pidlist+="${pidlist:+,}$!"
  done
  for n in $(seq 0 $((nodes - 1))); do
    for _ in $(seq 300); do grep -q listening "$out/$name.node$n.out" 2>/dev/null && break; sleep 0.1; done
  done
  # A cluster settles its room slots (two lease rounds) before the load starts.
  if [ "$nodes" -gt 1 ]; then sleep 4; fi
  target/release/roomcast-load "$@" --url "$urls" --secret $secret --server-pid "$pidlist" \
    >"$out/$name.jsonl" 2>"$out/$name.txt" || true
  for n in $(seq 0 $((nodes - 1))); do
    curl -s "http://127.0.0.1:$((9300 + n))/metrics" >"$out/$name.node$n.metrics" || true
  done
  for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  pids=()
  echo "== $name ($nodes node(s))"; cat "$out/$name.txt"
}

scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then scenarios=(big1 big2 private1 private2); fi
for s in "${scenarios[@]}"; do
  case $s in
    big1) run big1 1 room --rooms 1 --members 2001 --publishers 1 --rates "${BIG_RATES:-25,50,100,150,200}" --step-secs 10 --procs 2 ;;
    big2) run big2 2 room --rooms 1 --members 2001 --publishers 1 --rates "${BIG_RATES:-25,50,100,150,200}" --step-secs 10 --procs 2 ;;
    private1) run private1 1 room --rooms 2500 --members 2 --publishers 2 --rates "${PRIVATE_RATES:-250,500,1000,2000,5000}" --step-secs 10 --procs 2 ;;
    private2) run private2 2 room --rooms 2500 --members 2 --publishers 2 --rates "${PRIVATE_RATES:-250,500,1000,2000,5000}" --step-secs 10 --procs 2 ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
