# One entry point for people and CI. `make demo` runs the main job on the sandbox; `make test`
# runs every check (lint, types, tests). Both set up what they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PG_BIN := /usr/lib/postgresql/15/bin
PYTEST_ARGS ?=
TEST_LOCALE := de_DE.UTF-8
TEST_LOCALE_NAME := de_DE.utf8

.PHONY: demo test lint typecheck pytest setup system lock bench-verify bench-daily clean

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
	@# The verification test runs a live cluster with German server messages (lc_messages):
	@# that one locale is generated (the demo does not need it).
	@if ! locale -a 2>/dev/null | grep -qix '$(TEST_LOCALE_NAME)'; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "note: the tests need the $(TEST_LOCALE) locale: run 'sudo apt-get install locales && sudo localedef -i de_DE -f UTF-8 $(TEST_LOCALE)'"; \
	  else \
	    command -v localedef >/dev/null && [ -d /usr/share/i18n/locales ] || \
	      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq locales; }; \
	    localedef -i de_DE -f UTF-8 $(TEST_LOCALE); \
	  fi; \
	fi

# Python packages: exactly the versions (and hashes) pinned in requirements.lock, installed by uv
# (itself pinned, bootstrapped with pip); then this project, editable, without dependencies.
UV_VERSION := 0.9.30
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "need Python 3.11 (python3.11 or python3)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

# Refresh the lock after changing dependencies in pyproject.toml (commit both).
lock:
	test -x $(BIN)/uv || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); $(BIN)/python -m pip install -q "uv==$(UV_VERSION)"; }
	$(BIN)/uv pip compile -q --python-version 3.11 --extra dev --generate-hashes pyproject.toml -o requirements.lock

bench-verify: setup
	$(BIN)/python bench/verify_backup.py

bench-daily: setup
	$(BIN)/python bench/daily.py

clean:
	-$(BIN)/runbook sandbox down
	-rm -rf "$$($(BIN)/runbook sandbox status --json | $(BIN)/python -c 'import json, sys; print(json.load(sys.stdin)["dir"])')"
	rm -rf $(VENV) .sandbox
