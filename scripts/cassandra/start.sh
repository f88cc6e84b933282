#!/usr/bin/env bash
# Starts a real Apache Cassandra 5.0 for the test suite, from its published artefacts on
# Maven Central (no Docker, no package): `cassandra-all` and its dependency tree are
# copied into DIR/lib with Maven (scripts/cassandra/pom.xml), then
# org.apache.cassandra.service.CassandraDaemon runs in the background on free loopback
# ports with its own data directory. Idempotent: a Cassandra this script started in DIR
# and that still answers is reused.
#
# Usage: scripts/cassandra/start.sh [DIR]      (default DIR=target/cassandra)
# Prints "127.0.0.1:PORT" (the CQL native port) on its last line; DIR/pid, DIR/port and
# DIR/log/system.log tell the rest; DIR/tls/ca.pem is the CA of the node's TLS
# certificate (TLS is optional on the same port). Stop it with scripts/cassandra/stop.sh [DIR].
# Environment: CASSANDRA_HEAP (default 768M), CASSANDRA_START_TIMEOUT (seconds, 240),
# CASSANDRA_RESTART=1 (start again on the ports and data of the last start in DIR: a
# restart after stop.sh, for fault tests).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
DIR="${1:-target/cassandra}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
log() { echo "[cassandra] $*" >&2; }

cql_up() { # port -> 0 when the native transport accepts a connection
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1)
try:
    s.connect(("127.0.0.1", int(sys.argv[1]))); sys.exit(0)
except OSError:
    sys.exit(1)
PY
}

if [[ -f "$DIR/pid" && -f "$DIR/port" ]] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null && cql_up "$(cat "$DIR/port")"; then
  log "already running (pid $(cat "$DIR/pid"))"
  echo "127.0.0.1:$(cat "$DIR/port")"
  exit 0
fi

command -v java >/dev/null || { log "java not found: Cassandra 5.0 needs a JDK 11 or 17"; exit 2; }
command -v mvn >/dev/null || { log "mvn not found: the artefacts come from Maven Central"; exit 2; }

if [[ ! -f "$DIR/lib/.complete" ]]; then
  log "fetching cassandra-all and its dependencies from Maven Central into $DIR/lib"
  rm -rf "$DIR/lib"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$DIR/lib" -DincludeScope=runtime >"$DIR/mvn.log" 2>&1 \
    || { tail -30 "$DIR/mvn.log" >&2; log "maven failed (log: $DIR/mvn.log)"; exit 1; }
  touch "$DIR/lib/.complete"
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
if [[ "${CASSANDRA_RESTART:-0}" == 1 && -f "$DIR/port" && -f "$DIR/storage_port" ]]; then
  CQL_PORT=$(cat "$DIR/port")
  STORAGE_PORT=$(cat "$DIR/storage_port")
else
  CQL_PORT=$(free_port)
  STORAGE_PORT=$(free_port)
  rm -rf "$DIR/data" "$DIR/log"
fi
mkdir -p "$DIR/data" "$DIR/log" "$DIR/conf"
echo "$STORAGE_PORT" >"$DIR/storage_port"

# TLS on the native port, optional (plain and TLS clients share the port), for the
# tests of ROOMCAST_SCYLLA_TLS_CA_FILE: a test CA (DIR/tls/ca.pem) signs the node's
# certificate, which names 127.0.0.1 (the driver checks the IP); a second CA
# (DIR/tls/other-ca.pem) signs nothing, so trusting it must fail the handshake.
TLS="$DIR/tls"
if [[ ! -f "$TLS/.complete" ]]; then
  command -v keytool >/dev/null || { log "keytool not found (it ships with the JDK)"; exit 2; }
  rm -rf "$TLS"; mkdir -p "$TLS"
  kt() { keytool -storepass changeit -keypass changeit "$@" >>"$TLS/keytool.log" 2>&1; }
  for ca in ca other-ca; do
    kt -genkeypair -alias "$ca" -keyalg RSA -keysize 2048 -dname "CN=roomcast test $ca" \
      -ext bc:c -validity 3650 -keystore "$TLS/$ca.p12" -storetype PKCS12
    keytool -exportcert -rfc -alias "$ca" -keystore "$TLS/$ca.p12" -storepass changeit \
      >"$TLS/$ca.pem" 2>>"$TLS/keytool.log"
  done
  kt -genkeypair -alias node -keyalg RSA -keysize 2048 -dname "CN=127.0.0.1" \
    -validity 3650 -keystore "$TLS/node.p12" -storetype PKCS12
  keytool -certreq -alias node -keystore "$TLS/node.p12" -storepass changeit 2>>"$TLS/keytool.log" \
    | keytool -gencert -alias ca -keystore "$TLS/ca.p12" -storepass changeit -rfc -validity 3650 \
        -ext san=ip:127.0.0.1 -ext eku=serverAuth -ext ku=digitalSignature,keyEncipherment \
        >"$TLS/node.pem" 2>>"$TLS/keytool.log"
  kt -importcert -noprompt -alias ca -file "$TLS/ca.pem" -keystore "$TLS/node.p12"
  kt -importcert -alias node -file "$TLS/node.pem" -keystore "$TLS/node.p12"
  [[ -s "$TLS/node.pem" ]] || { cat "$TLS/keytool.log" >&2; log "keytool failed"; exit 1; }
  touch "$TLS/.complete"
fi

cat >"$DIR/conf/cassandra.yaml" <<YAML
cluster_name: roomcast-test
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [$DIR/data/data]
commitlog_directory: $DIR/data/commitlog
saved_caches_directory: $DIR/data/saved_caches
hints_directory: $DIR/data/hints
cdc_raw_directory: $DIR/data/cdc_raw
commitlog_sync: batch
commitlog_segment_size: 8MiB
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$STORAGE_PORT"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
native_transport_port: $CQL_PORT
start_native_transport: true
endpoint_snitch: SimpleSnitch
auto_bootstrap: false
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 4
memtable_allocation_type: heap_buffers
key_cache_size: 16MiB
counter_cache_size: 0MiB
read_request_timeout: 10000ms
write_request_timeout: 10000ms
range_request_timeout: 20000ms
request_timeout: 20000ms
cas_contention_timeout: 20000ms
materialized_views_enabled: false
client_encryption_options:
  enabled: true
  optional: true
  keystore: $TLS/node.p12
  keystore_password: changeit
  store_type: PKCS12
  require_client_auth: false
sasi_indexes_enabled: false
YAML

cat >"$DIR/conf/logback.xml" <<XML
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$DIR/log/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
XML

# The JPMS flags of apache/cassandra conf/jvm17-server.options (Java 17), and a small heap.
JVM=(-Xms"${CASSANDRA_HEAP:-768M}" -Xmx"${CASSANDRA_HEAP:-768M}" -Xss512k
  -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
  -XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath="$DIR/log"
  -Djdk.attach.allowAttachSelf=true
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports java.base/java.lang.ref=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
  -Dio.netty.tryReflectionSetAccessible=true
  -Dcassandra.config="file://$DIR/conf/cassandra.yaml"
  -Dcassandra.storagedir="$DIR/data"
  -Dcassandra.logdir="$DIR/log"
  -Dlogback.configurationFile="$DIR/conf/logback.xml"
  -Dcassandra-foreground=yes
  -Dcassandra.skip_wait_for_gossip_to_settle=0
  -Dcassandra.ring_delay_ms=100
)
jamm=$(ls "$DIR"/lib/jamm-*.jar 2>/dev/null | head -n1 || true)
[[ -n "$jamm" ]] && JVM+=(-javaagent:"$jamm")

log "starting on 127.0.0.1:$CQL_PORT (storage port $STORAGE_PORT, data in $DIR/data)"
nohup java "${JVM[@]}" -cp "$DIR/lib/*" org.apache.cassandra.service.CassandraDaemon \
  >"$DIR/log/stdout.log" 2>&1 </dev/null &
echo $! >"$DIR/pid"
echo "$CQL_PORT" >"$DIR/port"

deadline=$(( $(date +%s) + ${CASSANDRA_START_TIMEOUT:-240} ))
until cql_up "$CQL_PORT"; do
  if ! kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    tail -40 "$DIR/log/stdout.log" >&2 || true
    tail -40 "$DIR/log/system.log" >&2 || true
    log "Cassandra exited during start-up (logs in $DIR/log)"
    exit 1
  fi
  if (( $(date +%s) > deadline )); then
    tail -40 "$DIR/log/system.log" >&2 || true
    log "Cassandra did not open 127.0.0.1:$CQL_PORT within ${CASSANDRA_START_TIMEOUT:-240} s"
    exit 1
  fi
  sleep 1
done
log "up (pid $(cat "$DIR/pid"))"
echo "127.0.0.1:$CQL_PORT"
