"""The SQL Server drill's GX step without a server: its URL, its redaction, its quoting,
and the record it stores.

The URL is handed to SQLAlchemy's real mssql+pyodbc dialect, which builds an engine
without connecting, so the test sees the exact string pyodbc would get.  The one
connection attempted goes to a closed port through FreeTDS, to read the error text
a user would see.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import mssql, postgresql
from sqlalchemy.engine import make_url

from pitrflow.drill.record import drill_history, store_record
from pitrflow.engines.sqlserver import render
from pitrflow.engines.sqlserver.catalog import import_recorded_rows, read_sqlserver_catalog
from pitrflow.engines.sqlserver.connection import connection_string, sqlalchemy_url
from pitrflow.engines.sqlserver.drill import (
    NOTHING_CHECKED,
    SqlServerDrillOutcome,
    drill_record,
    recoverable_window,
)
from pitrflow.quality.run_gx import (
    QualityRunError,
    Redactor,
    ResultRow,
    _prepare_url,
    run_suites,
    table_query,
)
from pitrflow.storage.fs import FsRepository
from tests.conftest import free_port
from tests.unit.sqlserver.conftest import FIXTURES, sqlserver_instance

# Every character that ODBC, URLs, GX's config variables, JSON or HTML treat specially.
PASSWORD = "p}w;%$@ x{'\"é\\+"
SCRATCH = "Sales ]x_drill_20260102T030405Z"
STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _spellings(secret: str) -> set[str]:
    """The password as raw text, ODBC-braced, percent-encoded once and twice (any case)."""
    forms = {secret, secret.replace("}", "}}")}
    for form in list(forms):
        once = {quote(form, safe=""), quote_plus(form, safe=""), quote(form, safe=" +")}
        forms |= once | {quote(f, safe="") for f in once}
    forms |= {f.lower() for f in forms} - {secret.lower()}
    return forms | {json.dumps(secret)[1:-1], repr(secret)[1:-1], html.escape(secret)}


def _assert_hidden(text: str) -> None:
    for form in _spellings(PASSWORD):
        assert form not in text, f"password spelling {form!r} in {text!r}"


@pytest.fixture
def instance(tmp_path: Path):  # type: ignore[no-untyped-def]
    return sqlserver_instance("Sales ]x", tmp_path)


# --- the URL GX connects with ---


def test_url_hands_pyodbc_exactly_the_instance_connection_string(instance) -> None:
    pytest.importorskip("pyodbc")  # the dialect imports it; scripts/test.sh installs it
    url = sqlalchemy_url(instance, PASSWORD, SCRATCH)

    engine = create_engine(url)  # builds the dialect and pool; does not connect
    (odbc,), kwargs = engine.dialect.create_connect_args(engine.url)

    assert odbc == connection_string(instance, PASSWORD, SCRATCH)
    assert kwargs == {}
    assert "DATABASE={Sales ]x_drill_20260102T030405Z}" in odbc
    assert "DRIVER={FreeTDS};SERVER=sql1.internal;PORT=1433;TDS_Version=7.4" in odbc
    # GX reads "$" as a config variable: nothing of the ODBC string is left unencoded.
    assert url.startswith("mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BFreeTDS%7D")
    assert not set("${}; ") & set(url.partition("=")[2])


def test_gx_gets_the_same_string_after_run_suites_rerenders_the_url(instance) -> None:
    url, redact, postgres = _prepare_url(sqlalchemy_url(instance, PASSWORD, SCRATCH),
                                         [PASSWORD])

    assert postgres is False
    assert make_url(url).query["odbc_connect"] == connection_string(instance, PASSWORD, SCRATCH)
    _assert_hidden(redact(url))


def test_encryption_settings_reach_the_url(instance) -> None:
    microsoft = dataclasses.replace(instance, odbc_driver="ODBC Driver 18 for SQL Server",
                                    port=14330, trust_server_certificate=True)
    odbc = make_url(sqlalchemy_url(microsoft, None, SCRATCH)).query["odbc_connect"]
    assert ("SERVER=tcp:sql1.internal,14330;Encrypt=yes;TrustServerCertificate=yes;"
            "DATABASE={Sales ]x_drill_20260102T030405Z}") in odbc

    plain = dataclasses.replace(instance, encrypt=False)
    assert "Encryption=request" in make_url(sqlalchemy_url(plain, None, SCRATCH)).query[
        "odbc_connect"]


# --- redaction ---


@pytest.mark.parametrize("shape", [
    "raw", "odbc", "url", "url twice", "url lower-case hex", "url as sqlalchemy quotes passwords",
    "json", "repr", "html",
])
def test_every_spelling_of_the_password_is_redacted(instance, shape: str) -> None:
    odbc = connection_string(instance, PASSWORD, SCRATCH)
    url = sqlalchemy_url(instance, PASSWORD, SCRATCH)
    text = {
        "raw": PASSWORD,
        "odbc": odbc,
        "url": url,
        "url twice": quote(url, safe=""),
        "url lower-case hex": re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), url),
        "url as sqlalchemy quotes passwords": quote(PASSWORD, safe=" +"),
        "json": json.dumps({"connection": odbc}),
        "repr": repr(odbc),
        "html": html.escape(odbc),
    }[shape]

    redacted = Redactor([PASSWORD])(f"connect failed ({text}) retry")

    assert redacted.startswith("connect failed (") and redacted.endswith(") retry")
    assert "***" in redacted
    _assert_hidden(redacted)


def test_redaction_leaves_other_text_alone() -> None:
    text = "login pitrflow; database Sales ]x; 50% done {ok}"
    assert Redactor([PASSWORD])(text) == text
    assert Redactor([])(text) == text


def test_a_url_with_an_odbc_password_needs_the_secret(instance) -> None:
    with pytest.raises(ValueError) as info:
        run_suites(sqlalchemy_url(instance, PASSWORD, SCRATCH), [], None)
    assert "pass the password in secrets=" in str(info.value)
    _assert_hidden(str(info.value))


def test_unreachable_server_error_hides_the_password(instance) -> None:
    pytest.importorskip("pyodbc")
    dead = dataclasses.replace(instance, host="127.0.0.1", port=free_port(), encrypt=False)

    with pytest.raises(QualityRunError) as info:
        run_suites(sqlalchemy_url(dead, PASSWORD, SCRATCH), [], None, secrets=[PASSWORD])

    assert str(info.value).startswith("cannot connect GX to the restored instance: ")
    _assert_hidden(str(info.value))


def test_other_drivers_are_refused_without_echoing_the_url() -> None:
    with pytest.raises(ValueError) as info:
        run_suites(f"mysql+pymysql://u:{quote(PASSWORD, safe='')}@h/db", [], None)
    assert str(info.value) == (
        "database URL must use postgresql+psycopg or mssql+pyodbc, not mysql+pymysql")


# --- identifiers in the query GX runs ---


def test_tsql_names_are_bracketed_with_the_dialects_own_quoting() -> None:
    preparer = mssql.pyodbc.dialect().identifier_preparer
    assert table_query(preparer, "sales", 'Order Lines ]x "q" \'s') == (
        "SELECT * FROM [sales].[Order Lines ]]x \"q\" 's]")
    # text() would read ":x" as a bind parameter; GX parses the query twice.
    assert table_query(preparer, "dbo", "a :x 50%") == "SELECT * FROM [dbo].[a \\\\:x 50%]"


def test_postgres_names_keep_double_quotes() -> None:
    preparer = postgresql.psycopg.dialect().identifier_preparer
    assert table_query(preparer, "Ops", 'Audit "Log" ]') == (
        'SELECT * FROM "Ops"."Audit ""Log"" ]"')
    assert table_query(preparer, "public", "50% :x") == (
        'SELECT * FROM "public".U&"50\\0025 \\003Ax"')


# --- the outcome, the record it is stored as, and what the artifacts show ---


def _row(success: bool, expectation: str = "expect_table_row_count_to_be_between") -> ResultRow:
    return ResultRow("pitrflow.generated.dbo.Orders", expectation, None, success,
                     "1200" if success else "3")


def _outcome(**changes: object) -> SqlServerDrillOutcome:
    outcome = SqlServerDrillOutcome(
        instance="sales", database="Sales ]x", scratch_name=SCRATCH, target_utc=None,
        started=STARTED, finished=STARTED.replace(minute=9),
        window_from=STARTED.replace(day=1), window_to=STARTED.replace(hour=2),
        data_lag_seconds=3600.0, backups=["20260101T000000Z-F", "20260102T020000Z-L"],
        timings={"plan": 0.5, "source_facts": 0.3, "stage": 2.0, "restore": 7.5,
                 "checkdb": 1.0, "quality_checks": 4.0, "drop": 0.2},
        quality=[_row(True), _row(True, "expect_column_values_to_not_be_null")])
    return dataclasses.replace(outcome, **changes)


def test_a_passing_drill_is_stored_where_pitr_info_and_check_read_drills(tmp_path: Path) -> None:
    repo = FsRepository(tmp_path / "repo")
    outcome = _outcome()

    key = store_record(repo, drill_record(outcome))

    assert key == "sales/drills/20260102T030405.000000Z.json"
    [stored] = drill_history(repo, "sales")
    assert stored.passed and outcome.ok and outcome.findings == []
    assert (stored.engine, stored.target_mode, stored.target_time) == ("sqlserver", "latest",
                                                                       None)
    assert stored.rto_seconds == 10.0  # plan + stage + restore; checks are not RTO
    assert stored.data_lag_seconds == 3600.0
    assert stored.quality_checked == 2
    assert stored.phases["quality_checks"] == 4.0
    assert stored.chain == ["20260101T000000Z-F", "20260102T020000Z-L"]
    assert stored.window_to == STARTED.replace(hour=2)


def test_a_drill_that_checked_nothing_has_not_passed(tmp_path: Path) -> None:
    outcome = _outcome(quality=[])
    record = drill_record(outcome)

    assert outcome.findings == [NOTHING_CHECKED] and not outcome.ok
    assert not record.passed and record.quality_checked == 0


def test_every_finding_fails_the_drill_in_order(tmp_path: Path) -> None:
    outcome = _outcome(errors=["scratch database x was not dropped: denied"],
                       integrity=["Table error: object ID 5, page (1:153) is damaged"],
                       quality=[_row(True), _row(False)])
    record = drill_record(outcome, kept_at="database x on sql1,1433")

    assert outcome.findings == [
        "scratch database x was not dropped: denied",
        "checkdb: Table error: object ID 5, page (1:153) is damaged",
        "FAILED pitrflow.generated.dbo.Orders: expect_table_row_count_to_be_between "
        "observed=3",
    ]
    assert not record.passed
    assert record.error == "scratch database x was not dropped: denied"
    assert record.integrity_findings == ["Table error: object ID 5, page (1:153) is damaged"]
    assert record.quality_failures == [outcome.findings[2]]
    assert record.kept_at == "database x on sql1,1433"


def test_the_drill_dict_and_markdown_show_the_quality_rows() -> None:
    outcome = _outcome(quality=[_row(True), _row(False)])
    record = drill_record(outcome)
    record.evidence = "/repo/sales/drills/20260102T030405.000000Z/"

    data = render.drill_dict(outcome, record, "sales/drills/20260102T030405.000000Z.json")

    assert data["ok"] is False and data["quality_checked"] == 2
    assert data["quality"][1] == {
        "suite": "pitrflow.generated.dbo.Orders",
        "expectation_type": "expect_table_row_count_to_be_between", "column": None,
        "success": False, "observed": "3", "table": "", "check": "", "baseline": "",
        "bounds": ""}
    assert data["record_key"] == "sales/drills/20260102T030405.000000Z.json"
    text = render.drill_markdown(data)
    assert "## SQL Server recovery drill sales: FAILED" in text
    assert "| expectations checked | 2 |" in text
    assert "| data lag (source now - newest backup) | 3600 s |" in text
    assert f"- {outcome.findings[0]}" in text
    assert "| quality_checks | 4.00 s |" in text


def test_recoverable_window_runs_from_the_oldest_full_to_the_newest_backup(
        tmp_path: Path) -> None:
    repo = FsRepository(tmp_path / "repo")
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    catalog = read_sqlserver_catalog(repo, "sales")

    start, end = recoverable_window(catalog, "Sales")

    finishes = sorted(r.rows[0].backup_finish_date for r in catalog.records)
    assert start is not None and end is not None and start < end
    # plain_chain.json was recorded at UTC+01:00.
    assert end.replace(tzinfo=None) == finishes[-1].replace(hour=finishes[-1].hour - 1)
    assert recoverable_window(catalog, "Other") == (None, None)
