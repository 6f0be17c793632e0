"""The SQL Server source facts the drill's generated suites are built from.

The T-SQL is checked word for word (it runs from master against another database,
so every name must be three-part and quoted), and the pure rows -> TableFacts step
runs on catalog rows in the shape the server returns them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pitrflow.engines.sqlserver.facts import (
    AWARE_TYPES,
    catalog_sql,
    count_sql,
    facts_from_rows,
)
from pitrflow.quality.generate import TableFacts, generate_suites
from tests.unit.sqlserver.conftest import FIXTURES

TARGET = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)


def _recorded() -> list[TableFacts]:
    doc = json.loads((FIXTURES / "source_facts" / "sales_catalog.json").read_text())
    counts = {int(k): v for k, v in doc["counts"].items()}
    return facts_from_rows(doc["tables"], doc["columns"], doc["primary_keys"], counts)


def test_catalog_sql_names_every_view_in_the_source_database() -> None:
    tables, columns, keys = catalog_sql("Sales ]x", hidden_columns=True)

    assert tables == (
        "SELECT t.object_id, s.name AS schema_name, t.name AS table_name\n"
        "FROM [Sales ]]x].sys.tables AS t\n"
        "JOIN [Sales ]]x].sys.schemas AS s ON s.schema_id = t.schema_id\n"
        "WHERE t.is_ms_shipped = 0\n"
        "ORDER BY t.object_id")
    assert columns == (
        "SELECT c.object_id, c.column_id, c.name AS column_name,\n"
        "       COALESCE(base.name, ty.name) AS type_name,\n"
        "       c.is_nullable, c.is_computed, c.is_hidden\n"
        "FROM [Sales ]]x].sys.columns AS c\n"
        "JOIN [Sales ]]x].sys.tables AS t ON t.object_id = c.object_id\n"
        "JOIN [Sales ]]x].sys.types AS ty ON ty.user_type_id = c.user_type_id\n"
        "LEFT JOIN [Sales ]]x].sys.types AS base ON base.user_type_id = ty.system_type_id\n"
        "     AND ty.is_user_defined = 1 AND ty.is_assembly_type = 0\n"
        "WHERE t.is_ms_shipped = 0\n"
        "ORDER BY c.object_id, c.column_id")
    assert keys == (
        "SELECT ic.object_id, c.name AS column_name, ic.key_ordinal\n"
        "FROM [Sales ]]x].sys.indexes AS i\n"
        "JOIN [Sales ]]x].sys.index_columns AS ic\n"
        "     ON ic.object_id = i.object_id AND ic.index_id = i.index_id\n"
        "JOIN [Sales ]]x].sys.columns AS c\n"
        "     ON c.object_id = ic.object_id AND c.column_id = ic.column_id\n"
        "JOIN [Sales ]]x].sys.tables AS t ON t.object_id = i.object_id\n"
        "WHERE i.is_primary_key = 1 AND ic.key_ordinal > 0 AND t.is_ms_shipped = 0\n"
        "ORDER BY ic.object_id, ic.key_ordinal")


def test_servers_before_2016_are_not_asked_for_is_hidden() -> None:
    old = catalog_sql("Sales", hidden_columns=False)
    new = catalog_sql("Sales", hidden_columns=True)

    assert "is_hidden" not in "".join(old)
    assert old[1] == new[1].replace(", c.is_hidden", "")
    assert (old[0], old[2]) == (new[0], new[2])


def test_count_quotes_all_three_parts() -> None:
    assert count_sql("Sales ]x", "sales", "Order Lines ]x") == (
        "SELECT COUNT_BIG(*) FROM [Sales ]]x].[sales].[Order Lines ]]x]")


def test_recorded_rows_become_table_facts() -> None:
    facts = _recorded()

    assert facts == [
        TableFacts("dbo", "Audit Log", 0, (), (),
                   {"Message": "nvarchar", "At": "datetimeoffset"}),
        TableFacts("dbo", "Orders", 1200, ("OrderId",),
                   # AmountWithTax is NOT NULL but computed: nothing stored to check.
                   ("OrderId", "Customer", "Amount", "CreatedAt"),
                   {"OrderId": "int", "Customer": "nvarchar", "Amount": "decimal",
                    "CreatedAt": "datetimeoffset", "UpdatedAt": "datetime2",
                    "AmountWithTax": "decimal"}),
        # Key order comes from key_ordinal, not column order; hidden period columns
        # get no check because SELECT * does not return them.
        TableFacts("sales", "Order Lines ]x", 3100, ("OrderId", "Line No"),
                   ("Line No", "OrderId", "Sku]"),
                   {"Line No": "int", "OrderId": "int", "Sku]": "nvarchar", "Qty": "int",
                    "ValidFrom": "datetime2", "ValidTo": "datetime2"}),
        # The history table is kept: a restore must bring its rows back too.
        TableFacts("sales", "Orders_History", 47, (),
                   ("Line No", "OrderId", "Sku]", "ValidFrom", "ValidTo"),
                   {"Line No": "int", "OrderId": "int", "Sku]": "nvarchar", "Qty": "int",
                    "ValidFrom": "datetime2", "ValidTo": "datetime2"}),
    ]


def test_rows_from_a_server_without_is_hidden_still_read() -> None:
    columns = [{"object_id": 1, "column_id": 1, "column_name": "id", "type_name": "int",
                "is_nullable": 0, "is_computed": 0}]
    [facts] = facts_from_rows([{"object_id": 1, "schema_name": "dbo", "table_name": "t"}],
                              columns, [], {1: 5})
    assert facts.not_null == ("id",)


def test_a_table_without_a_count_is_refused() -> None:
    with pytest.raises(ValueError, match="no row count for table dbo.t"):
        facts_from_rows([{"object_id": 1, "schema_name": "dbo", "table_name": "t"}], [], [], {})


def test_generated_suites_cover_keys_not_nulls_and_a_datetimeoffset_freshness() -> None:
    suites = {s.qualified_table: s for s in generate_suites(
        _recorded(), 0.2, {"dbo.Orders": "CreatedAt"}, TARGET, timedelta(hours=1),
        aware_types=AWARE_TYPES)}

    lines = {(e.type, e.column) for e in suites["sales.Order Lines ]x"].expectations}
    assert lines == {
        ("expect_table_row_count_to_be_between", None),
        ("expect_compound_columns_to_be_unique", "OrderId,Line No"),
        ("expect_column_values_to_not_be_null", "OrderId"),
        ("expect_column_values_to_not_be_null", "Line No"),
        ("expect_column_values_to_not_be_null", "Sku]"),
    }
    orders = suites["dbo.Orders"].expectations
    assert orders[0].kwargs["min_value"] == 960  # 1200 rows, 20 % tolerance
    [fresh] = [e for e in orders if e.type == "expect_column_max_to_be_between"]
    assert fresh.kwargs["column"] == "CreatedAt"
    assert fresh.kwargs["min_value"] == TARGET - timedelta(hours=1)


def test_freshness_on_a_datetime2_column_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError) as info:
        generate_suites(_recorded(), 0.2, {"dbo.Orders": "UpdatedAt"}, TARGET,
                        timedelta(hours=1), aware_types=AWARE_TYPES)
    assert str(info.value) == (
        "freshness: dbo.Orders.UpdatedAt is datetime2; only datetimeoffset can be compared "
        "to the aware target time without guessing a zone")


def test_freshness_types_follow_the_engine() -> None:
    # PostgreSQL's default does not accept SQL Server's aware type: the caller says which.
    with pytest.raises(ValueError, match="only timestamp with time zone"):
        generate_suites(_recorded(), 0.2, {"dbo.Orders": "CreatedAt"}, TARGET,
                        timedelta(hours=1))
