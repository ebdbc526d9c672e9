# One entry point for people and CI. `make demo` runs the main job on the sandbox; `make test`
# runs every check (lint, types, tests). Both set up what they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PG_BIN := /usr/lib/postgresql/15/bin
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck pytest setup system bench-verify bench-daily clean

demo: setup
	$(BIN)/runbook demo --approve-as "make demo"

test: setup lint typecheck pytest

lint: setup
	$(BIN)/ruff check flows tasks deployments sandbox tests bench
	$(BIN)/ruff format --check flows tasks deployments sandbox tests bench

typecheck: setup
	$(BIN)/mypy

pytest: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/pytest $(PYTEST_ARGS)

setup: system $(VENV)/.installed

# System packages: pgBackRest and the PostgreSQL 15 server, from Debian, when missing.
# postgresql-common would create and start a `main` cluster on 5432: we do not want one.
system:
	@if ! command -v pgbackrest >/dev/null || [ ! -x $(PG_BIN)/pg_ctl ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "need pgbackrest and postgresql-15: run 'sudo apt-get install pgbackrest postgresql-15'"; exit 1; \
	  fi; \
	  mkdir -p /etc/postgresql-common; \
	  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf || \
	    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest postgresql-15; \
	fi

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "need Python 3.11 (python3.11 or python3)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

bench-verify: setup
	$(BIN)/python bench/verify_backup.py

bench-daily: setup
	$(BIN)/python bench/daily.py

clean:
	-$(BIN)/runbook sandbox down
	rm -rf $(VENV) .sandbox
