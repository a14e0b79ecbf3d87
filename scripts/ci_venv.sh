#!/usr/bin/env bash
# CI: .venv becomes a link to a virtual environment kept per content of the requirements (and the Python
# version) under $KYARA_VENV_CACHE (default ~/.cache/kyara/venvs). A fresh clone whose requirements did not
# change reuses it in a second instead of installing torch and the rest again (3-4 minutes, 6.6 GB on a
# 2-core box); a changed requirement builds a new one beside it, and a fresh machine builds the first one.
# Built in place (a venv's scripts name their own path) under a lock, and used only once complete.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -e .venv ] && { [ ! -L .venv ] || [[ "$(readlink .venv)" != "${KYARA_VENV_CACHE:-$HOME/.cache/kyara/venvs}"/* ]]; }; then
  echo "Using this checkout's own .venv (make's stamps decide what to install)."
  exit 0
fi
PYTHON=${PYTHON:-python3}
cache=${KYARA_VENV_CACHE:-$HOME/.cache/kyara/venvs}
key=$({ "$PYTHON" -c 'import sys; print(sys.version)'; cat requirements.txt requirements-dev.txt; } | sha256sum | cut -c1-16)
venv="$cache/$key"
mkdir -p "$cache"
exec 9>"$cache/$key.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "Building the CI virtual environment $venv (requirements changed, or a fresh machine)"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --upgrade pip wheel >/dev/null
  "$venv/bin/pip" install -r requirements-dev.txt
  touch "$venv/.complete"
  # Keep the newest three; older ones belong to requirements no clone asks for any more.
  ls -1dt "$cache"/*/ 2>/dev/null | tail -n +4 | while read -r old; do rm -rf "$old" "${old%/}.lock"; done
else
  echo "Reusing the CI virtual environment $venv"
fi
ln -sfn "$venv" .venv
# make's install stamps: newer than this clone's requirement files, so `make test` installs nothing.
touch .venv/.run-installed .venv/.dev-installed
