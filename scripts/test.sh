#!/usr/bin/env bash
# Runs the whole test suite on a fresh clone: installs what it needs into
# .venv, checks style with ruff, then runs pytest against real PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export GX_ANALYTICS_ENABLED=false
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
