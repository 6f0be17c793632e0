"""What the drill's generated suites need to know about a SQL Server source database.

The same facts the PostgreSQL drill reads (``pitrflow.quality.generate.TableFacts``):
every user table's row count, primary-key columns in key order, NOT NULL columns and
column types, read from the *source* database just before the drill restores.

The catalog views are named with three parts (``[Sales].sys.tables``) and joined
explicitly, because the session stays in master (RESTORE wants it there) and
functions such as ``SCHEMA_NAME()`` or ``TYPE_NAME()`` would answer for master.

Decisions, each visible in the SQL below:

- ``is_ms_shipped = 0`` leaves out system tables.  System-versioned history tables
  are kept: they hold data a restore must bring back, and filtering them needs
  ``temporal_type``, which SQL Server 2012 and 2014 do not have.
- Computed columns get no NOT NULL check: they store nothing (or only a derived
  value), so they prove nothing about the restore, and evaluating a non-persisted
  one can itself fail.
- Hidden columns (``GENERATED ALWAYS ... HIDDEN`` period columns, ledger columns;
  ``sys.columns.is_hidden`` from SQL Server 2016) get no check: the drill reads each
  table with ``SELECT *``, which does not return them.
- Types are reported as the base system type, so an alias type (``CREATE TYPE
  Stamp FROM datetimeoffset``) still counts as ``datetimeoffset`` for freshness.

Counts are ``COUNT_BIG(*)`` under the session's isolation level, one table at a
time, so they describe slightly different instants on a busy source; the generated
row-count check is only a lower bound with a tolerance, which absorbs that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pitrflow.engines.sqlserver.connection import SqlExecutor
from pitrflow.engines.sqlserver.tsql import quote_name
from pitrflow.errors import ServerError
from pitrflow.quality.generate import TableFacts

AWARE_TYPES: frozenset[str] = frozenset({"datetimeoffset"})
"""The only SQL Server type whose values say which instant they are: a freshness
column of type datetime2, datetime or smalldatetime would need a guessed zone."""

HAS_HIDDEN_COLUMNS_SQL = "SELECT COL_LENGTH('sys.columns', 'is_hidden')"
"""Non-NULL from SQL Server 2016, whose sys.columns knows hidden columns."""

PERMISSIONS_SQL = (
    "SELECT HAS_PERMS_BY_NAME(?, 'DATABASE', 'SELECT') AS can_select, "
    "HAS_PERMS_BY_NAME(?, 'DATABASE', 'VIEW DEFINITION') AS can_view_definition"
)

SERVER_UTC_NOW_SQL = "SELECT CONVERT(varchar(23), SYSUTCDATETIME(), 126)"
"""Text, not datetime2: FreeTDS and Microsoft's driver hand datetime2 back differently."""


def catalog_sql(database: str, hidden_columns: bool) -> list[str]:
    """Tables, columns and primary-key columns of ``database``, one query each.

    ``hidden_columns``: whether the server's sys.columns has ``is_hidden``
    (see ``HAS_HIDDEN_COLUMNS_SQL``).
    """
    db = quote_name(database)
    hidden = ", c.is_hidden" if hidden_columns else ""
    tables = (
        "SELECT t.object_id, s.name AS schema_name, t.name AS table_name\n"
        f"FROM {db}.sys.tables AS t\n"
        f"JOIN {db}.sys.schemas AS s ON s.schema_id = t.schema_id\n"
        "WHERE t.is_ms_shipped = 0\n"
        "ORDER BY t.object_id"
    )
    columns = (
        "SELECT c.object_id, c.column_id, c.name AS column_name,\n"
        "       COALESCE(base.name, ty.name) AS type_name,\n"
        f"       c.is_nullable, c.is_computed{hidden}\n"
        f"FROM {db}.sys.columns AS c\n"
        f"JOIN {db}.sys.tables AS t ON t.object_id = c.object_id\n"
        f"JOIN {db}.sys.types AS ty ON ty.user_type_id = c.user_type_id\n"
        f"LEFT JOIN {db}.sys.types AS base ON base.user_type_id = ty.system_type_id\n"
        "     AND ty.is_user_defined = 1 AND ty.is_assembly_type = 0\n"
        "WHERE t.is_ms_shipped = 0\n"
        "ORDER BY c.object_id, c.column_id"
    )
    keys = (
        "SELECT ic.object_id, c.name AS column_name, ic.key_ordinal\n"
        f"FROM {db}.sys.indexes AS i\n"
        f"JOIN {db}.sys.index_columns AS ic\n"
        "     ON ic.object_id = i.object_id AND ic.index_id = i.index_id\n"
        f"JOIN {db}.sys.columns AS c\n"
        "     ON c.object_id = ic.object_id AND c.column_id = ic.column_id\n"
        f"JOIN {db}.sys.tables AS t ON t.object_id = i.object_id\n"
        "WHERE i.is_primary_key = 1 AND ic.key_ordinal > 0 AND t.is_ms_shipped = 0\n"
        "ORDER BY ic.object_id, ic.key_ordinal"
    )
    return [tables, columns, keys]


def count_sql(database: str, schema: str, table: str) -> str:
    name = ".".join(quote_name(part) for part in (database, schema, table))
    return f"SELECT COUNT_BIG(*) FROM {name}"


@dataclass(frozen=True)
class TableShape:
    """One table's names, key and checkable columns, from the catalog rows."""

    object_id: int
    schema: str
    table: str
    primary_key: tuple[str, ...]
    not_null: tuple[str, ...]
    column_types: dict[str, str]


def describe_tables(
    tables: Iterable[Mapping[str, Any]],
    columns: Iterable[Mapping[str, Any]],
    keys: Iterable[Mapping[str, Any]],
) -> list[TableShape]:
    """The catalog rows of ``catalog_sql`` as one shape per table, by schema then table.

    Sorted by schema, then table, whatever the server's collation orders them by.
    """
    by_table: dict[int, list[Mapping[str, Any]]] = {}
    for row in sorted(columns, key=lambda r: (int(r["object_id"]), int(r["column_id"]))):
        by_table.setdefault(int(row["object_id"]), []).append(row)
    key_columns: dict[int, list[tuple[int, str]]] = {}
    for row in keys:
        key_columns.setdefault(int(row["object_id"]), []).append(
            (int(row["key_ordinal"]), str(row["column_name"])))
    shapes = []
    for table in tables:
        object_id = int(table["object_id"])
        cols = by_table.get(object_id, [])
        shapes.append(TableShape(
            object_id=object_id,
            schema=str(table["schema_name"]),
            table=str(table["table_name"]),
            primary_key=tuple(name for _, name in sorted(key_columns.get(object_id, []))),
            not_null=tuple(str(c["column_name"]) for c in cols
                           if not c["is_nullable"] and not c["is_computed"]
                           and not c.get("is_hidden")),
            column_types={str(c["column_name"]): str(c["type_name"]) for c in cols},
        ))
    return sorted(shapes, key=lambda s: (s.schema, s.table))


def facts_from_rows(
    tables: Iterable[Mapping[str, Any]],
    columns: Iterable[Mapping[str, Any]],
    keys: Iterable[Mapping[str, Any]],
    counts: Mapping[int, int],
) -> list[TableFacts]:
    """The catalog rows of ``catalog_sql`` and each table's count, as TableFacts.

    Pure, so it is tested on recorded rows.  ``counts`` maps object_id to the
    table's COUNT_BIG(*).
    """
    facts = []
    for shape in describe_tables(tables, columns, keys):
        if shape.object_id not in counts:
            raise ValueError(f"no row count for table {shape.schema}.{shape.table}")
        facts.append(TableFacts(shape.schema, shape.table, int(counts[shape.object_id]),
                                shape.primary_key, shape.not_null, shape.column_types))
    return facts


def read_source_facts(sql: SqlExecutor, database: str, login: str) -> list[TableFacts]:
    """Count and describe every user table of ``database`` on the connected server.

    Refuses up front when the login cannot SELECT in the database: catalog views
    only show objects a login has rights on, so without it the drill would see
    no tables and silently generate no checks.
    """
    rights = sql.query(PERMISSIONS_SQL, [database, database],
                       what=f"permission check on database {database}")
    row = rights[0] if rights else {}
    if row.get("can_select") != 1:
        raise ServerError(
            f"login {login} cannot read the tables of database {database}, so the drill "
            "cannot count their rows",
            f"in {database}: CREATE USER for the login if needed, then GRANT SELECT, VIEW "
            "DEFINITION TO it (or run the drill as a sysadmin login)")
    hidden = sql.scalar(HAS_HIDDEN_COLUMNS_SQL) is not None
    tables_sql, columns_sql, keys_sql = catalog_sql(database, hidden)
    what = f"catalog read of database {database}"
    tables = sql.query(tables_sql, what=what)
    columns = sql.query(columns_sql, what=what)
    keys = sql.query(keys_sql, what=what)
    counts = {}
    for table in tables:
        schema, name = str(table["schema_name"]), str(table["table_name"])
        counts[int(table["object_id"])] = int(sql.scalar(
            count_sql(database, schema, name), what=f"row count of {database}.{schema}.{name}"))
    return facts_from_rows(tables, columns, keys, counts)


def server_utc_now(sql: SqlExecutor) -> datetime:
    """The server's clock, for the data lag (the drill worker's clock may differ)."""
    text = str(sql.scalar(SERVER_UTC_NOW_SQL, what="read of the server's clock"))
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
