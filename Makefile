# Two commands on a fresh clone:
#   make run    venv + install + migrate + demo data + serve http://127.0.0.1:8000 with a Celery
#               worker and beat (SQLite and a filesystem broker under var/: no service needed)
#   make test   the whole suite (SQLite; PostgreSQL too when DATABASE_URL is set)
# and the one that shows the whole product:
#   make demo   as `make run`, then the agent chat example (scripts/agent_chat.py) against it;
#               the IdP stays up for the admin until Ctrl-C (ARGS=--once: exit after the run)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
# Coverage gate of `make test` (each run: SQLite, then PostgreSQL in CI). COV_ARGS= turns it
# off, e.g. for `make test COV_ARGS= PYTEST_ARGS=tests/test_api.py`.
COV_ARGS ?= --cov=chain_grant --cov-report=term-missing:skip-covered --cov-fail-under=95
ARGS ?=

.PHONY: run demo test lint venv migrate demo-data clean

$(STAMP): requirements.txt pyproject.toml
	@echo "==> creating virtualenv $(VENV) and installing requirements (first run takes a minute)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -r requirements.txt
	@touch $(STAMP)

venv: $(STAMP)

migrate: $(STAMP)
	@echo "==> migrating the database (default: SQLite under var/)"
	@$(PY) manage.py migrate --noinput -v0

demo-data: migrate
	@echo "==> creating demo data (admin, alice, client chain-demo, seven agents)"
	@$(PY) manage.py bootstrap_demo

run: demo-data
	@PY=$(PY) HOST=$(HOST) PORT=$(PORT) scripts/run_dev.sh

demo: demo-data
	@PY=$(PY) HOST=$(HOST) PORT=$(PORT) scripts/run_dev.sh --demo $(ARGS)

test: $(STAMP)
	@$(PY) -m pytest $(COV_ARGS) $(PYTEST_ARGS)

lint: $(STAMP)
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m mypy
	@$(PY) -c 'import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())'  # lint-imports

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
