# Kyara: `make run` starts the platform, `make test` runs the whole suite. Both are idempotent and
# need nothing installed by hand beyond Python 3.11+ (and, for browser tests, Debian's chromium,
# which `make test` installs when it can).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
# The SQLite pass of `make test` on this many pytest-xdist workers (1: none). The browser tests share one.
TEST_WORKERS ?= 2
XDIST := $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup)

.PHONY: run serve test test-fast test-cov test-scale install install-dev migrate admin worker bench lint clean help

help:
	@echo "make run        install, migrate, ensure an admin, start web server + qcluster workers"
	@echo "make serve      the same with gunicorn (production-grade) instead of the dev server"
	@echo "make test       install dev requirements and run the whole suite: SQLite (2 workers), then the"
	@echo "                tests marked backend again on PostgreSQL+Redis+S3 (make test-scale alone)"
	@echo "make test-fast  the SQLite run without the slow and browser tests (stops at the first failure)"
	@echo "make test-cov   the SQLite pass with line coverage of apps/ (this process and the xdist workers)"
	@echo "make worker     one queue's qcluster (QUEUE=default or QUEUE=training), e.g. on another machine"
	@echo "make bench      run the speed scripts in bench/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip wheel >/dev/null

$(VENV)/.run-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -r requirements-dev.txt
	touch $(VENV)/.run-installed $@

install: $(VENV)/.run-installed
install-dev: $(VENV)/.dev-installed

migrate: install
	$(BIN)/python manage.py migrate --noinput

admin: migrate
	$(BIN)/python manage.py ensure_admin --url http://$(HOST):$(PORT)/admin/

run: admin
	HOST=$(HOST) PORT=$(PORT) SERVER=dev bash scripts/run.sh

serve: admin
	HOST=$(HOST) PORT=$(PORT) SERVER=gunicorn bash scripts/run.sh

# One queue's workers (QUEUE=default or training), e.g. on a machine of their own: see README "Running at scale".
QUEUE ?= default
worker: install
	$(BIN)/python manage.py worker --queue $(QUEUE)

test: install-dev
	bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)
	bash scripts/test_scale.sh $(PYTEST_ARGS)

test-fast: install-dev
	$(BIN)/python -m pytest -x -q -m "not slow and not browser" $(PYTEST_ARGS)

test-cov: install-dev
	bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest $(XDIST) --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

test-scale: install-dev
	bash scripts/test_scale.sh $(PYTEST_ARGS)

bench: install-dev
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

lint: install-dev
	$(BIN)/ruff check apps config tests bench

clean:
	rm -rf var/test .pytest_cache
