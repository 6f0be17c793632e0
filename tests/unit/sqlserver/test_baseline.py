"""SQL Server drill baselines on recorded rows: the T-SQL, rows -> baseline, the bounds.

No SQL Server runs here: the reads are checked word for word (they run from master
against another database, so every name is three-part and quoted) and the pure
steps run on rows in the shape the server returns them (fixtures/source_facts).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pitrflow.drill.baseline import Baseline, dump_baseline, load_baseline
from pitrflow.drill.bounds import BoundSettings, plan_reference
from pitrflow.engines.sqlserver.baseline import (
    baseline_from_rows,
    baseline_key_of,
    leading_index_sql,
    newest_sql,
    parse_utc_text,
    partition_stats_sql,
    stored_baselines,
    tables_to_count,
)
from pitrflow.engines.sqlserver.catalog import import_recorded_rows, read_sqlserver_catalog
from pitrflow.engines.sqlserver.drill import live_baseline
from pitrflow.engines.sqlserver.expire import delete_backup_set
from pitrflow.engines.sqlserver.facts import AWARE_TYPES
from pitrflow.engines.sqlserver.record import record_prefix
from pitrflow.quality.generate import TableFacts, check_freshness_config, suites_from_plan
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import FIXTURES

SETTINGS = BoundSettings(0.2, {"dbo.Orders": "CreatedAt"})


def _catalog() -> dict[str, Any]:
    return json.loads((FIXTURES / "source_facts" / "sales_catalog.json").read_text())


def _recorded(which: str) -> Baseline:
    catalog = _catalog()
    doc = json.loads((FIXTURES / "source_facts" / "sales_baselines.json").read_text())[which]
    return baseline_from_rows(
        instance="sales", origin="log", origin_id=doc["backup_id"],
        origin_time=datetime.fromisoformat(doc["finished"]),
        read_from=datetime.fromisoformat(doc["read_from"]),
        read_to=datetime.fromisoformat(doc["read_to"]),
        tables=catalog["tables"] + doc.get("extra_tables", []),
        columns=catalog["columns"] + doc.get("extra_columns", []),
        keys=catalog["primary_keys"], partitions=doc["partitions"],
        exact={int(k): v for k, v in doc["exact"].items()},
        newest={(int(k), "CreatedAt"): v for k, v in doc["newest"].items()},
        exact_limit_bytes=16 * 1024 * 1024)


def test_partition_stats_read_catalog_views_of_the_source_database_only() -> None:
    assert partition_stats_sql("Sales ]x") == (
        "SELECT t.object_id,\n"
        "       (SELECT SUM(p.rows) FROM [Sales ]]x].sys.partitions AS p\n"
        "        WHERE p.object_id = t.object_id AND p.index_id IN (0, 1)) AS row_estimate,\n"
        "       (SELECT SUM(a.total_pages) FROM [Sales ]]x].sys.partitions AS p\n"
        "        JOIN [Sales ]]x].sys.allocation_units AS a\n"
        "             ON (a.type IN (1, 3) AND a.container_id = p.hobt_id)\n"
        "             OR (a.type = 2 AND a.container_id = p.partition_id)\n"
        "        WHERE p.object_id = t.object_id AND p.index_id IN (0, 1)) AS total_pages\n"
        "FROM [Sales ]]x].sys.tables AS t\n"
        "WHERE t.is_ms_shipped = 0\n"
        "ORDER BY t.object_id")
    assert leading_index_sql("Sales") == (
        "SELECT ic.object_id, c.name AS column_name\n"
        "FROM [Sales].sys.index_columns AS ic\n"
        "JOIN [Sales].sys.columns AS c\n"
        "     ON c.object_id = ic.object_id AND c.column_id = ic.column_id\n"
        "JOIN [Sales].sys.tables AS t ON t.object_id = ic.object_id\n"
        "WHERE ic.key_ordinal = 1 AND t.is_ms_shipped = 0")


def test_the_newest_value_is_read_in_utc_as_text() -> None:
    assert newest_sql("Sales", "dbo", "Audit]Log", "At ]") == (
        "SELECT CONVERT(varchar(27), CONVERT(datetime2(7), SWITCHOFFSET(MAX([At ]]]), "
        "'+00:00')), 126) FROM [Sales].[dbo].[Audit]]Log]")
    assert parse_utc_text("2026-01-02T02:44:59.1234567") == datetime(
        2026, 1, 2, 2, 44, 59, 123456, tzinfo=UTC)
    assert parse_utc_text("2026-01-02T02:44:59") == datetime(2026, 1, 2, 2, 44, 59, tzinfo=UTC)
    assert parse_utc_text(None) is None


def test_only_small_tables_are_counted_smallest_first_within_the_budget() -> None:
    partitions = [{"object_id": 1, "total_pages": 9000}, {"object_id": 2, "total_pages": 40},
                  {"object_id": 3, "total_pages": 0}, {"object_id": 4, "total_pages": 100}]
    assert tables_to_count(partitions, 16 * 1024 * 1024) == [3, 2, 4]
    assert tables_to_count(partitions, 0) == []
    assert tables_to_count(partitions, 16 * 1024 * 1024, budget_bytes=50 * 8192) == [3, 2]


def test_recorded_rows_become_a_baseline() -> None:
    baseline = _recorded("after_first_log")
    tables = baseline.by_name()
    assert list(tables) == ["dbo.Audit Log", "dbo.Orders", "sales.Order Lines ]x",
                            "sales.Orders_History"]
    orders = tables["dbo.Orders"]
    assert (orders.estimates, orders.exact, orders.changes) == ((1200,), 1200, None)
    assert orders.primary_key == ("OrderId",)
    assert orders.not_null == ("OrderId", "Customer", "Amount", "CreatedAt")
    assert orders.newest == {"CreatedAt": datetime(2026, 1, 2, 2, 44, 59, 123456, tzinfo=UTC)}
    lines = tables["sales.Order Lines ]x"]  # 70 MB: estimated, not counted
    assert (lines.estimates, lines.exact) == ((3100,), None)
    assert baseline.label() == "log 20260102T024500Z-L (2026-01-02T02:45:00Z)"
    assert load_baseline(dump_baseline(baseline), "k").tables == baseline.tables


def test_bounds_between_two_log_backups() -> None:
    first, second = _recorded("after_first_log"), _recorded("after_second_log")
    target = datetime(2026, 1, 2, 2, 52, tzinfo=UTC)
    live = live_baseline("sales", [TableFacts("dbo", "Orders", 1900)],
                         datetime(2026, 1, 2, 4, 0, tzinfo=UTC),
                         datetime(2026, 1, 2, 4, 0, 1, tzinfo=UTC))
    fresh = check_freshness_config({"dbo.Orders": "CreatedAt"}, second.tables, AWARE_TYPES)

    reference = plan_reference(target, [second, first], live,
                               BoundSettings(0.2, fresh, timedelta(hours=1)))

    assert (reference.mode, reference.before, reference.after) == (
        "baselines", "log 20260102T024500Z-L (2026-01-02T02:45:00Z)",
        "log 20260102T030000Z-L (2026-01-02T03:00:00Z)")
    plans = {p.qualified_table: p for p in reference.tables}
    orders = plans["dbo.Orders"]
    assert orders.rows is not None and (orders.rows.min_value, orders.rows.max_value) == (
        1200, 1500)
    assert orders.freshness is not None
    assert orders.freshness.min_value == datetime(2026, 1, 2, 2, 44, 59, 123456, tzinfo=UTC)
    lines = plans["sales.Order Lines ]x"].rows  # estimates widened by the tolerance
    assert lines is not None and (lines.min_value, lines.max_value) == (2480, 4080)
    empty = plans["dbo.Audit Log"].rows
    assert empty is not None and (empty.min_value, empty.max_value) == (0, 0)
    refunds = plans["dbo.Refunds"]
    assert refunds.skipped is not None and refunds.skipped.startswith(
        "created after log 20260102T024500Z-L")

    suites = {s.qualified_table: s for s in suites_from_plan(reference.tables)}
    assert "dbo.Refunds" not in suites
    row_count, *_, freshness = suites["dbo.Orders"].expectations
    assert row_count.kwargs == {"min_value": 1200, "max_value": 1500}
    assert freshness.type == "expect_column_max_to_be_between"
    assert freshness.kwargs["column"] == "CreatedAt"
    assert row_count.meta["pitrflow"]["baseline"] == (
        "log 20260102T024500Z-L (2026-01-02T02:45:00Z) .. "
        "log 20260102T030000Z-L (2026-01-02T03:00:00Z)")


def test_a_target_before_the_first_log_baseline_falls_back_in_words() -> None:
    first = _recorded("after_first_log")
    live = live_baseline("sales", [TableFacts("dbo", "Orders", 1900)],
                         datetime(2026, 1, 2, 4, 0, tzinfo=UTC),
                         datetime(2026, 1, 2, 4, 0, 1, tzinfo=UTC))
    reference = plan_reference(datetime(2026, 1, 2, 2, 30, tzinfo=UTC), [first], live,
                               SETTINGS, oldest=first.label())
    assert reference.mode == "fallback"
    assert "the oldest is log 20260102T024500Z-L" in reference.statement
    orders = {p.qualified_table: p for p in reference.tables}["dbo.Orders"]
    assert orders.rows is not None and (orders.rows.min_value, orders.rows.max_value) == (
        960, None)


def test_a_baseline_lives_beside_its_backup_and_expires_with_it(repo: FsRepository) -> None:
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    catalog = read_sqlserver_catalog(repo, "sales")
    log = next(r for r in catalog.records if r.kind == "log")
    key = baseline_key_of("sales", log)
    assert key == f"sales/logs/{log.id}/baseline.json.zst"
    repo.put_bytes(key, dump_baseline(_recorded("after_first_log")))

    again = read_sqlserver_catalog(repo, "sales")
    assert again.rejected == {} and len(again.records) == len(catalog.records)
    [stored] = stored_baselines(repo, "sales", again.records)
    assert stored.key == key

    delete_backup_set(repo, "sales", log.id, record_prefix("sales", log.kind, log.id))
    assert stored_baselines(repo, "sales", read_sqlserver_catalog(repo, "sales").records) == []
    assert not repo.exists(key)
