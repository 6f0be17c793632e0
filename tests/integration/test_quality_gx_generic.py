"""GX's generic SQL datasource, the one SQL Server drills use, run for real on PostgreSQL.

No SQL Server runs here, so the generic path (``add_sql`` plus the dialect's own
identifier quoting) is forced on the session's PostgreSQL 18 with
``generic_sql=True``.  The table's name holds a space, a double quote, a ``]`` and
a ``:`` (which SQLAlchemy's text() would otherwise read as a bind parameter), the
schema's a ``%`` (which psycopg's parameter style doubles), and the key columns are
as awkward, so a quoting mistake anywhere fails a row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from psycopg import sql
from sqlalchemy.engine import URL

from pitrflow.devtools.localpg import LocalCluster
from pitrflow.engines.postgres.drill.facts import read_source_catalog
from pitrflow.quality.generate import TableFacts, generate_suites
from pitrflow.quality.run_gx import QualityRunError, SuiteRunReport, run_suites
from pitrflow.quality.suites import ExpectationSpec, Suite
from tests.conftest import free_port

DATABASE = "pitrflow_gx_generic"
SCHEMA = "Odd %Schema"
TABLE = 'Audit "Log" ] :x'
KEY = ("Id ]1", "line:no")
NOTE = 'Note "q"'
ROWS = 40
# The cluster trusts every local connection, so this password is never checked;
# it is in the URL to prove no spelling of it leaks from the generic path.
PASSWORD = "pw}; %$@ 'x\"é"
NEWEST_AGE = timedelta(minutes=5)


def _spellings(secret: str) -> list[str]:
    braced = secret.replace("}", "}}")
    forms = {secret, braced}
    for form in list(forms):
        once = [quote(form, safe=""), quote_plus(form, safe=""), quote(form, safe=" +")]
        forms |= set(once) | {quote(f, safe="") for f in once}
    return sorted(forms | {f.lower() for f in forms if "%" in f})


def _assert_no_secret(text: str) -> None:
    for form in _spellings(PASSWORD):
        assert form not in text, f"password spelling {form!r} leaked"


@pytest.fixture(scope="module")
def generic_db(pg18: LocalCluster) -> Iterator[tuple[str, datetime]]:
    target = datetime.now(UTC).replace(microsecond=0)
    with pg18.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with pg18.connect(DATABASE) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL(
            "CREATE TABLE {}.{} ({} int, {} int, {} text NOT NULL, at timestamptz NOT NULL,"
            " maybe text, PRIMARY KEY ({}, {}))").format(
                sql.Identifier(SCHEMA), sql.Identifier(TABLE), sql.Identifier(KEY[0]),
                sql.Identifier(KEY[1]), sql.Identifier(NOTE), sql.Identifier(KEY[0]),
                sql.Identifier(KEY[1])))
        # Literals, not parameters: psycopg would read the schema's '%' as a placeholder.
        conn.execute(sql.SQL(
            "INSERT INTO {}.{} SELECT g / 4, mod(g, 4), 'n' || g, {} - g * interval '1 second',"
            " NULL FROM generate_series(0, {}) g").format(
                sql.Identifier(SCHEMA), sql.Identifier(TABLE), sql.Literal(target - NEWEST_AGE),
                sql.Literal(ROWS - 1)))
    yield URL.create("postgresql+psycopg", username=pg18.superuser, password=PASSWORD,
                     host=pg18.host, port=pg18.port, database=DATABASE).render_as_string(
                         hide_password=False), target
    with pg18.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(DATABASE)))


@pytest.fixture(scope="module")
def facts(pg18: LocalCluster, generic_db: tuple[str, datetime]) -> list[TableFacts]:
    with pg18.connect(DATABASE) as conn:
        return read_source_catalog(conn)


def _report_text(report: SuiteRunReport) -> str:
    return json.dumps([asdict(row) for row in report.rows] + list(report.warnings))


def test_generic_datasource_checks_an_awkwardly_named_table(
    generic_db: tuple[str, datetime], facts: list[TableFacts], tmp_path: Path
) -> None:
    url, target = generic_db
    [table] = facts
    assert (table.schema, table.table, table.primary_key) == (SCHEMA, TABLE, KEY)
    suites = generate_suites(facts, 0.0, {f"{SCHEMA}.{TABLE}": "at"}, target,
                             timedelta(hours=1))
    evidence = tmp_path / "evidence"

    report = run_suites(url, suites, evidence, generic_sql=True)

    assert report.success, report.summary()
    checked = {(r.expectation_type, r.column) for r in report.rows}
    assert checked == {
        ("expect_table_row_count_to_be_between", None),
        ("expect_compound_columns_to_be_unique", ",".join(KEY)),
        ("expect_column_values_to_not_be_null", KEY[0]),
        ("expect_column_values_to_not_be_null", KEY[1]),
        ("expect_column_values_to_not_be_null", NOTE),
        ("expect_column_values_to_not_be_null", "at"),
        ("expect_column_max_to_be_between", "at"),
    }
    fresh = next(r for r in report.rows if r.expectation_type == "expect_column_max_to_be_between")
    assert datetime.fromisoformat(fresh.observed) == target - NEWEST_AGE
    assert json.loads((evidence / "summary.json").read_text())["success"] is True
    for path in evidence.rglob("*"):
        if path.is_file():
            _assert_no_secret(path.read_text(errors="replace"))
    _assert_no_secret(_report_text(report))


def test_generic_path_reports_a_failing_expectation_as_a_finding(
    generic_db: tuple[str, datetime],
) -> None:
    url, _ = generic_db
    suites = [Suite("team.audit", SCHEMA, TABLE, [
        ExpectationSpec("expect_column_values_to_not_be_null", {"column": "maybe"}),
        ExpectationSpec("expect_table_row_count_to_be_between", {"min_value": 1000}),
        ExpectationSpec("expect_column_values_to_be_unique", {"column": KEY[0]}),
    ])]

    report = run_suites(url, suites, None, generic_sql=True)

    assert not report.success
    assert [(r.expectation_type, r.success) for r in report.rows] == [
        ("expect_column_values_to_not_be_null", False),
        ("expect_table_row_count_to_be_between", False),
        ("expect_column_values_to_be_unique", False),
    ]
    assert report.rows[0].observed == f"{ROWS} unexpected of {ROWS}"
    assert report.rows[1].observed == str(ROWS)
    # Four rows share each "Id ]1": the column alone is not unique, the key is.
    assert re.fullmatch(rf"{ROWS} unexpected of {ROWS}", report.rows[2].observed)
    assert "FAILED team.audit: expect_table_row_count_to_be_between" in report.summary()
    _assert_no_secret(_report_text(report))


def test_generic_path_error_hides_every_spelling_of_the_password(
    generic_db: tuple[str, datetime],
) -> None:
    url, _ = generic_db
    dead = URL.create("postgresql+psycopg", username="postgres", password=PASSWORD,
                      host="127.0.0.1", port=free_port(), database=DATABASE)
    with pytest.raises(QualityRunError) as info:
        run_suites(dead.render_as_string(hide_password=False), [], None, generic_sql=True,
                   secrets=[PASSWORD])
    assert "cannot connect GX" in str(info.value)
    _assert_no_secret(str(info.value))
