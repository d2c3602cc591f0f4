#!/usr/bin/env bash
# `make run`: the IdP on the embedded default (SQLite, filesystem broker under var/),
# with a Celery worker and beat (housekeeping) next to it. Ctrl-C stops both.
#
# `make demo` (scripts/run_dev.sh --demo [--once] [agent_chat.py options]): the same IdP
# and worker in the background, then the agent chat example (scripts/agent_chat.py)
# against it; then the server stays up, with the admin credentials printed, until
# Ctrl-C. With --once (this script's option: the example always exits after its one
# run) it stops the server and the worker after the run and exits with the example's
# status. `make demo ARGS=--help` prints the usage and the example's options.
set -euo pipefail
PY=${PY:-.venv/bin/python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
VAR=${IDP_VAR_DIR:-var}
mkdir -p "$VAR/celery"

usage() {
  cat <<'USAGE'
usage: scripts/run_dev.sh                                    the IdP and its worker (`make run`)
       scripts/run_dev.sh --demo [--once] [EXAMPLE OPTIONS]  `make demo ARGS="..."`

  --demo   start the IdP and the worker in the background, run the agent chat example
           (scripts/agent_chat.py --idp http://$HOST:$PORT --var $IDP_VAR_DIR) against
           them, then keep them up for the admin until Ctrl-C
  --once   with --demo: stop the IdP and the worker after the example's run instead,
           and exit with its status (the example itself always exits after one run)

Every other argument after --demo goes to the example:
USAGE
  "$PY" scripts/agent_chat.py --help | sed -n '/^options:/,$p'
}

DEMO=0 ONCE=0 CHAT_ARGS=()
for arg in "$@"; do
  if [[ $arg == -h || $arg == --help ]]; then usage; exit 0; fi
done
if [[ ${1:-} == --demo ]]; then
  DEMO=1; shift
  for arg in "$@"; do
    if [[ $arg == --once ]]; then ONCE=1; else CHAT_ARGS+=("$arg"); fi
  done
elif [[ $# -gt 0 ]]; then
  usage >&2
  exit 2
fi
URL="http://$HOST:$PORT"
WORKER="" SERVER=""

cleanup() {
  local pid
  for pid in $SERVER $WORKER; do kill "$pid" 2>/dev/null || true; done
  for pid in $SERVER $WORKER; do wait "$pid" 2>/dev/null || true; done
  SERVER="" WORKER=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $DEMO == 1 ]] && "$PY" -c "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)" \
    "$HOST" "$PORT" 2>/dev/null; then
  echo "!!  something already answers on $HOST:$PORT (\`make run\`?): stop it, or use another port: make demo PORT=8001" >&2
  exit 1
fi

echo "==> starting the Celery worker with beat (log: $VAR/celery/worker.log)"
"$PY" -m celery -A idp_project worker --beat --concurrency 1 --loglevel INFO \
  --schedule "$VAR/celerybeat-schedule" >"$VAR/celery/worker.log" 2>&1 &
WORKER=$!

if [[ $DEMO == 0 ]]; then
  echo "==> serving the IdP at $URL/  (Ctrl-C to stop)"
  DEBUG=${DEBUG:-1} "$PY" manage.py runserver "$HOST:$PORT"
  exit
fi

echo "==> starting the IdP at $URL/ (log: $VAR/server.log)"
DEBUG=${DEBUG:-1} "$PY" manage.py runserver --noreload "$HOST:$PORT" >"$VAR/server.log" 2>&1 &
SERVER=$!

echo "==> waiting for the IdP to answer (OpenID discovery)"
for _ in $(seq 1 120); do
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "!!  the IdP did not start; the end of $VAR/server.log:" >&2
    tail -n 20 "$VAR/server.log" >&2
    exit 1
  fi
  if "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "$URL/oauth/.well-known/openid-configuration" 2>/dev/null; then
    break
  fi
  sleep 0.5
done

echo "==> running the agent chat example (scripts/agent_chat.py): wallet → agents → consent → writer"
echo
set +e
"$PY" scripts/agent_chat.py --idp "$URL" --var "$VAR" ${CHAT_ARGS[@]+"${CHAT_ARGS[@]}"}
STATUS=$?
set -e
echo

if [[ $ONCE == 1 ]]; then
  echo "==> --once: stopping the IdP and the worker"
  cleanup
  exit "$STATUS"
fi

[[ $STATUS == 0 ]] || echo "!!  the example failed (status $STATUS); the IdP stays up so you can look around" >&2
"$PY" - "$VAR/demo_credentials.json" "$URL" <<'EOF'
import json, sys
creds = json.load(open(sys.argv[1]))
url = sys.argv[2]
print(f"==> the IdP keeps running at {url}/ : inspect the chain in the admin, {url}/admin/chain_grant/chain/")
print(f"    admin / {creds['admin_password']}    alice / {creds['alice_password']}    ({sys.argv[1]})")
EOF
echo "    run the example again: $PY scripts/agent_chat.py --idp $URL --var $VAR"
echo "    Ctrl-C stops the IdP and the worker."
wait "$SERVER"
