# Intrathecal pump clinic tracker.
#
#   make run    virtual environment, install, migrate, demo data when the database is
#               empty, then the Celery worker and beat in the background and the web
#               server in the foreground (Ctrl-C stops all three)
#   make test   install, then the test suite
#
# Needs only Python 3.11 or later. Embedded defaults: SQLite, a file-system Celery broker
# and e-mail written to files, all under var/ (see README.md for the environment).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: help run test lint bench loadtest install migrate clean distclean

help:
	@echo "make run      start the app with demo data on http://$(HOST):$(PORT)/ (worker and beat included)"
	@echo "make test     run the test suite"
	@echo "make lint     ruff and the import contracts"
	@echo "make loadtest Locust against gunicorn (4 workers), a Celery worker and beat on a fresh 100,000-pump database for 5 minutes (LOADTEST_ARGS='--pumps 2000 --duration 60': quick)"
	@echo "make bench    seed 2,000 and 100,000 pumps on PostgreSQL and measure (BENCH_DATABASE_URL)"
	@echo "make install  create $(VENV) and install the project (only when pyproject.toml changed)"
	@echo "make migrate  apply database migrations"
	@echo "make clean    remove var/ (database, broker, mail, secret key) and caches"

$(PY):
	@test -n "$(PYTHON)" || { echo "Python 3.11 or later is needed (python3.11 or python3 on PATH)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or later is needed, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(PY) manage.py migrate --no-input

# One sweep before the server starts: alerts and the heartbeat of /health/ are current
# before beat's first run, one interval later.
run: migrate
	@mkdir -p var/log
	$(PY) manage.py seed_demo --if-empty
	$(PY) manage.py run_alert_sweep
	@set -uo pipefail; \
	export SITE_URL="$${SITE_URL:-http://$(HOST):$(PORT)}"; \
	$(VENV)/bin/celery -A clinic worker --loglevel=INFO --concurrency=2 -Q celery,email,webhooks >var/log/worker.log 2>&1 & worker=$$!; \
	$(VENV)/bin/celery -A clinic beat --loglevel=INFO --schedule var/celerybeat-schedule >var/log/beat.log 2>&1 & beat=$$!; \
	stopped=; stop() { test -n "$$stopped" && return; stopped=1; kill $$worker $$beat 2>/dev/null; wait $$worker $$beat 2>/dev/null; echo "Stopped the web server, the worker and beat. Goodbye."; }; \
	trap stop EXIT; trap 'exit 0' INT TERM; \
	echo; \
	echo "  App:           http://$(HOST):$(PORT)/   admin: http://$(HOST):$(PORT)/admin/"; \
	echo "  API docs:      http://$(HOST):$(PORT)/api/v1/docs/   health: http://$(HOST):$(PORT)/health/"; \
	echo "  Links in e-mails: $$SITE_URL   (set SITE_URL to change)"; \
	echo "  Demo sign-in:  demo / demo-pump-clinic   (roles: lakeshore.rn.hayes nurse, lakeshore.dr.chen prescriber; same password)"; \
	echo "  Worker log:    var/log/worker.log   beat log: var/log/beat.log   e-mail: var/mail/"; \
	echo "  Ctrl-C stops the web server, the worker and beat."; \
	echo; \
	set -m 2>/dev/null; \
	$(PY) manage.py runserver $(HOST):$(PORT); \
	exit 0

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (120 columns, complexity and size limits) and the import contracts of pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

# Needs a PostgreSQL server (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres):
# creates pumpclinic_bench_<size> databases there. BENCH_ARGS="--sizes 2000" for a quick run.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) bench/bench.py $(BENCH_ARGS)

# PostgreSQL and Redis on this machine; loopback only, bounded in users and time.
LOADTEST_ARGS ?=
loadtest: $(STAMP)
	loadtest/run.sh $(LOADTEST_ARGS)

clean:
	rm -rf var .pytest_cache .hypothesis test-artifacts *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
