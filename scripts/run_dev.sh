#!/usr/bin/env bash
# `make run`: the IdP on the embedded default (SQLite, filesystem broker under var/),
# with a Celery worker and beat (housekeeping) next to it. Ctrl-C stops both.
set -euo pipefail
PY=${PY:-.venv/bin/python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
VAR=${IDP_VAR_DIR:-var}
mkdir -p "$VAR/celery"

echo "==> starting the Celery worker with beat (log: $VAR/celery/worker.log)"
"$PY" -m celery -A idp_project worker --beat --concurrency 1 --loglevel INFO \
  --schedule "$VAR/celerybeat-schedule" >"$VAR/celery/worker.log" 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true' EXIT INT TERM

echo "==> serving the IdP at http://$HOST:$PORT/  (Ctrl-C to stop)"
DEBUG=${DEBUG:-1} "$PY" manage.py runserver "$HOST:$PORT"
