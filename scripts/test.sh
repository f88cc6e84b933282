#!/usr/bin/env bash
# The whole test suite, set-up included: installs what the tests need when it is
# missing (the Autobahn|Testsuite), then runs every test in the workspace (unit tests,
# the store conformance suite, end-to-end tests against the real binary, and the
# Autobahn conformance run), and checks that the load driver and benches compile.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${ROOMCAST_SKIP_AUTOBAHN:-0}" != "1" ]; then
  wstest="${WSTEST:-/opt/autobahn/bin/wstest}"
  if ! [ -x "$wstest" ] || ! "$wstest" -a >/dev/null 2>&1; then
    installer="../shared/tools/autobahn/install.sh"
    if ! [ -f "$installer" ]; then
      echo "scripts/test.sh: $installer not found; set ROOMCAST_SKIP_AUTOBAHN=1 to run without the conformance suite" >&2
      exit 2
    fi
    echo "scripts/test.sh: installing the Autobahn|Testsuite"
    bash "$installer" >/tmp/roomcast-autobahn-install.log 2>&1 || { tail -50 /tmp/roomcast-autobahn-install.log; exit 1; }
  fi
fi

cargo test --workspace --all-targets
