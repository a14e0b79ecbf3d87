#!/usr/bin/env bash
# The scale-out run: tests that touch the database, the queue or the cache, again on PostgreSQL and
# Redis, and the S3 media path against moto's S3 server, started here on a free port of 127.0.0.1.
# Required (a missing service or a skip is a failure) when CI=true or KYARA_REQUIRE_SERVICES=1;
# otherwise skipped with a message when the services are not reachable.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
export DATABASE_URL=${KYARA_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
export REDIS_URL=${KYARA_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
required=0
if [ "${CI:-}" = "true" ] || [ "${KYARA_REQUIRE_SERVICES:-}" = "1" ]; then required=1; fi

if ! "$BIN/python" scripts/services_up.py; then
  if [ $required = 1 ]; then
    echo "Scale-out run: PostgreSQL or Redis is not reachable, and they are required here." >&2
    exit 1
  fi
  echo "SKIPPED the scale-out run (PostgreSQL + Redis): services not reachable; the SQLite run above passed."
  exit 0
fi
export KYARA_SCALE_RUN=1
export KYARA_REQUIRE_SERVICES=$required
export KYARA_DATA_DIR=${KYARA_DATA_DIR:-$PWD/var/test-scale}
mkdir -p "$KYARA_DATA_DIR"

# S3: moto's server (requirements-dev), unless KYARA_TEST_S3_ENDPOINT_URL names one already.
s3_pid=""
if [ -z "${KYARA_TEST_S3_ENDPOINT_URL:-}" ] && [ -x "$BIN/moto_server" ]; then
  s3_port=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$BIN/moto_server" -H 127.0.0.1 -p "$s3_port" >"$KYARA_DATA_DIR/moto-s3.log" 2>&1 &
  s3_pid=$!
  trap 'kill $s3_pid 2>/dev/null; wait $s3_pid 2>/dev/null' EXIT
  export KYARA_TEST_S3_ENDPOINT_URL=http://127.0.0.1:$s3_port
fi
if [ -n "${KYARA_TEST_S3_ENDPOINT_URL:-}" ] && "$BIN/python" scripts/services_up.py s3; then
  s3="$KYARA_TEST_S3_ENDPOINT_URL"
else
  unset KYARA_TEST_S3_ENDPOINT_URL
  if [ $required = 1 ]; then
    echo "Scale-out run: no S3 server (moto_server from requirements-dev), and it is required here." >&2
    exit 1
  fi
  s3="none (the S3 media test skips: install requirements-dev for moto_server)"
fi
echo "Scale-out run: $DATABASE_URL, $REDIS_URL, S3: $s3"
"$BIN/python" -m pytest -m "not no_scale" "$@"
