#!/usr/bin/env bash
# Runs the whole test suite on a fresh clone: installs what it needs into
# .venv, checks style with ruff, then runs pytest against real PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The SQL Server tests drive pyodbc's real driver manager and FreeTDS (to a closed port,
# and SQLAlchemy's mssql+pyodbc dialect); without them those tests are skipped.
if ! odbcinst -q -d 2>/dev/null | grep -q '^\[FreeTDS\]'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing unixodbc and tdsodbc (FreeTDS) for the SQL Server tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends unixodbc tdsodbc >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 \
           && apt-get install -y -q --no-install-recommends unixodbc tdsodbc >/dev/null 2>&1; } \
      || echo "warning: could not install unixodbc/tdsodbc; SQL Server driver tests skip" >&2
  else
    echo "note: no FreeTDS ODBC driver (apt-get install unixodbc tdsodbc); SQL Server" \
         "driver tests skip" >&2
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export GX_ANALYTICS_ENABLED=false
.venv/bin/ruff check .
# Two pytest workers (pytest-xdist), a module each at a time: most tests wait on
# PostgreSQL, pg_basebackup or a Prefect server, so two cores serve two of them at once
# (about 11 min instead of 24 here).  PITR_TEST_WORKERS=0 runs them in one process.
exec .venv/bin/python -m pytest -q -n "${PITR_TEST_WORKERS:-2}" --dist loadscope "$@"
