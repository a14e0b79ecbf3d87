#!/usr/bin/env bash
# Start the web server and the qcluster workers (default and training queues) side by side; Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
SERVER=${SERVER:-dev}

if [ "$SERVER" = "gunicorn" ]; then
  # make serve: production settings with nothing to set. The secret key is generated once into
  # KYARA_DATA_DIR (like the admin password); on a loopback address there is no TLS, so plain HTTP.
  export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.production}
  export KYARA_LOCAL_SECRET=${KYARA_LOCAL_SECRET:-1}
  case "$HOST" in
    127.*|localhost|::1|"[::1]") export KYARA_HTTPS=${KYARA_HTTPS:-0} ;;
  esac
fi

pids=()
stop() {
  trap - INT TERM EXIT
  echo "Stopping Kyara (web server and workers)..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# Two queues, two clusters: a training run holds its own worker, never one that crawls and evaluations need.
"$BIN/python" manage.py worker --queue default &
pids+=($!)
"$BIN/python" manage.py worker --queue training &
pids+=($!)
if [ "$SERVER" = "gunicorn" ]; then
  "$BIN/python" manage.py collectstatic --noinput >/dev/null
  # Threads share one process's model cache; raise KYARA_GUNICORN_WORKERS on a bigger machine.
  "$BIN/gunicorn" config.wsgi:application --bind "$HOST:$PORT" \
    --workers "${KYARA_GUNICORN_WORKERS:-1}" --threads "${KYARA_GUNICORN_THREADS:-4}" \
    --timeout 120 --access-logfile - &
else
  "$BIN/python" manage.py runserver "$HOST:$PORT" --noreload &
fi
pids+=($!)
echo "Kyara is up: http://$HOST:$PORT/  (admin: http://$HOST:$PORT/admin/, API docs: http://$HOST:$PORT/api/docs/)"
wait -n "${pids[@]}"
