#!/usr/bin/env bash
# The scale-out run: tests that touch the database, the queue or the cache, again on PostgreSQL and
# Redis. Required (a missing service or a skip is a failure) when CI=true or KYARA_REQUIRE_SERVICES=1;
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
echo "Scale-out run: $DATABASE_URL, $REDIS_URL"
exec "$BIN/python" -m pytest -m "not no_scale" "$@"
