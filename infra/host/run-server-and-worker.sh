#!/usr/bin/env bash
# Start a Prefect server and a pitrflow `process` worker on this host, in the foreground.
#
# For a first look or a small installation; in production run the same two commands as
# the systemd units beside this script (prefect-server.service, pitrflow-worker.service).
#
#   PITRFLOW_VENV=/opt/pitrflow/venv PITRFLOW_HOME=/opt/pitrflow/src \
#       infra/host/run-server-and-worker.sh
#
# Environment (all optional):
#   PITRFLOW_VENV   virtualenv with pitrflow installed     (default: <checkout>/.venv)
#   PITRFLOW_HOME   the checkout the worker imports flows/ from (default: this checkout)
#   PITRFLOW_POOL   work pool name                         (default: pitrflow)
#   PREFECT_HOME    Prefect's state (SQLite database, UI)  (default: /var/lib/pitrflow/prefect)
#   PREFECT_SERVER_API_HOST / PREFECT_SERVER_API_PORT      (default: 127.0.0.1 / 4200)
# Database passwords reach the worker through its environment (password_env in the
# pitrflow config) or Prefect Secret blocks (password_block): export them before starting.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export PITRFLOW_HOME=${PITRFLOW_HOME:-$(cd "$here/../.." && pwd)}
venv=${PITRFLOW_VENV:-$PITRFLOW_HOME/.venv}
pool=${PITRFLOW_POOL:-pitrflow}
host=${PREFECT_SERVER_API_HOST:-127.0.0.1}
port=${PREFECT_SERVER_API_PORT:-4200}
export PREFECT_HOME=${PREFECT_HOME:-/var/lib/pitrflow/prefect}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_API_URL="http://$host:$port/api"
prefect="$venv/bin/prefect"

if [ ! -x "$prefect" ]; then
  echo "error: $prefect not found: python3 -m venv $venv && $venv/bin/pip install $PITRFLOW_HOME" >&2
  exit 2
fi
mkdir -p "$PREFECT_HOME"

pids=()
stop() {
  # TERM, then KILL after 20 s, as systemd's TimeoutStopSec would: a process stuck in
  # its own shutdown (seen with the worker on a loaded host) must not hold the host.
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  trap - EXIT INT TERM
  # Newest first: the worker reports its shutdown to the server while it still answers.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    stop "${pids[i]}"
  done
}
trap cleanup EXIT INT TERM

"$prefect" server start --host "$host" --port "$port" &
pids+=($!)

for _ in $(seq 1 120); do
  if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "$PREFECT_API_URL/health" 2>/dev/null; then
    break
  fi
  sleep 1
done

# The worker runs flow runs as child processes from the checkout, so flows/ imports;
# PITRFLOW_CONCURRENCY comes from each deployment's job variables.
(cd "$PITRFLOW_HOME" && exec "$prefect" worker start --pool "$pool" --type process) &
pids+=($!)

echo "Prefect UI/API: http://$host:$port  (API $PREFECT_API_URL), worker on pool '$pool'"
echo "Register the deployments: PREFECT_API_URL=$PREFECT_API_URL $venv/bin/python -m deployments.deploy --config /etc/pitrflow/pitrflow.toml"
wait -n "${pids[@]}"
