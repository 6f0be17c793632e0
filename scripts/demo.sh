#!/usr/bin/env bash
# Runs the demo on a fresh clone: embedded PostgreSQL 18, a filesystem
# repository, Prefect's ephemeral API. Installs what it needs into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/python -m pitrflow.devtools.demo "$@"
