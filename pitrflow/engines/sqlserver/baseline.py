"""Drill baselines for SQL Server: the source's per-table facts after each backup.

The same facts the PostgreSQL baseline keeps (``pitrflow.drill.baseline``):
each table's row estimate from ``sys.partitions`` (heap or clustered index,
summed over partitions: catalog metadata, no table is read), an exact
``COUNT_BIG(*)`` when its reserved pages are under the instance's
drill.exact_count_max_mb, the newest value of each configured freshness
column (read only where an index leads with it or the table was counted),
and the key, NOT NULL columns and types that ``facts.catalog_sql`` reads.

SQL Server keeps no cheap insert/delete counters per table, so a baseline
has none and the bounds are the plain min/max of the neighbours.  Each read
runs at the session's isolation level, so the baseline describes the source
somewhere between the server clock read before the first query and after
the last (``read_from`` .. ``read_to``).  It is stored beside the backup's
manifest (``<instance>/logs/<id>/baseline.json.zst``), and so expires with
that backup.  The SQL and the rows -> baseline step are pure and tested on
recorded rows; ``record_sqlserver_baseline`` runs them and never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from pitrflow.config import InstanceConfig
from pitrflow.drill.baseline import Baseline, TableBaseline, dump_baseline, sort_tables
from pitrflow.drill.history import StoredBaseline
from pitrflow.engines.sqlserver.connection import SqlExecutor
from pitrflow.engines.sqlserver.facts import (
    HAS_HIDDEN_COLUMNS_SQL,
    catalog_sql,
    count_sql,
    describe_tables,
    server_utc_now,
)
from pitrflow.engines.sqlserver.msdb import row_times_utc
from pitrflow.engines.sqlserver.record import SqlServerBackupRecord, object_key
from pitrflow.engines.sqlserver.tsql import quote_name
from pitrflow.errors import PitrError
from pitrflow.quality.suites import split_table_name
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import BASELINE_NAME

log = logging.getLogger("pitrflow.sqlserver.baseline")

PAGE_BYTES = 8192
EXACT_BUDGET_BYTES = 512 * 1024 * 1024


def partition_stats_sql(database: str) -> str:
    """Row estimate and reserved pages per user table; catalog views only, no table read.

    In-row and row-overflow units belong to a partition's hobt, LOB units to the
    partition itself; only the heap or clustered index (index_id 0 or 1) holds rows.
    """
    db = quote_name(database)
    return (
        "SELECT t.object_id,\n"
        f"       (SELECT SUM(p.rows) FROM {db}.sys.partitions AS p\n"
        "        WHERE p.object_id = t.object_id AND p.index_id IN (0, 1)) AS row_estimate,\n"
        f"       (SELECT SUM(a.total_pages) FROM {db}.sys.partitions AS p\n"
        f"        JOIN {db}.sys.allocation_units AS a\n"
        "             ON (a.type IN (1, 3) AND a.container_id = p.hobt_id)\n"
        "             OR (a.type = 2 AND a.container_id = p.partition_id)\n"
        "        WHERE p.object_id = t.object_id AND p.index_id IN (0, 1)) AS total_pages\n"
        f"FROM {db}.sys.tables AS t\n"
        "WHERE t.is_ms_shipped = 0\n"
        "ORDER BY t.object_id"
    )


def leading_index_sql(database: str) -> str:
    """Columns that lead some index of a user table: MAX() on one reads a single row."""
    db = quote_name(database)
    return (
        "SELECT ic.object_id, c.name AS column_name\n"
        f"FROM {db}.sys.index_columns AS ic\n"
        f"JOIN {db}.sys.columns AS c\n"
        "     ON c.object_id = ic.object_id AND c.column_id = ic.column_id\n"
        f"JOIN {db}.sys.tables AS t ON t.object_id = ic.object_id\n"
        "WHERE ic.key_ordinal = 1 AND t.is_ms_shipped = 0"
    )


def newest_sql(database: str, schema: str, table: str, column: str) -> str:
    """The newest value of a datetimeoffset column, in UTC, as text.

    Text, not the driver's own type: FreeTDS and Microsoft's driver hand
    datetimeoffset back differently; style 126 of a datetime2 is ISO 8601.
    """
    name = ".".join(quote_name(part) for part in (database, schema, table))
    return (f"SELECT CONVERT(varchar(27), CONVERT(datetime2(7), "
            f"SWITCHOFFSET(MAX({quote_name(column)}), '+00:00')), 126) FROM {name}")


def parse_utc_text(text: str | None) -> datetime | None:
    """``2026-01-02T03:04:05.1234567`` (UTC, up to 7 fraction digits) as an aware time."""
    if text is None:
        return None
    head, dot, fraction = text.strip().partition(".")
    value = datetime.fromisoformat(head + (f".{fraction[:6].ljust(6, '0')}" if dot else ""))
    return value.replace(tzinfo=UTC)


def baseline_from_rows(
    *, instance: str, origin: str, origin_id: str, origin_time: datetime,
    read_from: datetime, read_to: datetime,
    tables: Iterable[Mapping[str, object]], columns: Iterable[Mapping[str, object]],
    keys: Iterable[Mapping[str, object]], partitions: Iterable[Mapping[str, object]],
    exact: Mapping[int, int], newest: Mapping[tuple[int, str], str | None],
    exact_limit_bytes: int | None = None, notes: Sequence[str] = (),
) -> Baseline:
    """The rows of ``catalog_sql``, ``partition_stats_sql``, the counts and the newest values.

    ``exact`` maps object_id to COUNT_BIG(*) for the tables that were counted;
    ``newest`` maps (object_id, column) to ``newest_sql``'s text (None: no row
    had a value) for the columns that were read.  Pure.
    """
    stats = {int(str(r["object_id"])): r for r in partitions}
    shapes = describe_tables(tables, columns, keys)  # type: ignore[arg-type]
    result = []
    for shape in shapes:
        row = stats.get(shape.object_id, {})
        estimate = row.get("row_estimate")
        result.append(TableBaseline(
            schema=shape.schema, table=shape.table,
            estimates=(int(str(estimate)),) if estimate is not None else (),
            exact=exact.get(shape.object_id),
            primary_key=shape.primary_key, not_null=shape.not_null,
            column_types=shape.column_types,
            newest={column: parse_utc_text(text) for (oid, column), text in newest.items()
                    if oid == shape.object_id},
        ))
    return Baseline(instance=instance, engine="sqlserver", origin=origin, origin_id=origin_id,
                    origin_time=origin_time, read_from=read_from, read_to=read_to,
                    tables=sort_tables(result), exact_limit_bytes=exact_limit_bytes,
                    notes=tuple(notes))


def tables_to_count(partitions: Iterable[Mapping[str, object]], limit_bytes: int | None,
                    budget_bytes: int = EXACT_BUDGET_BYTES) -> list[int]:
    """Object ids small enough to count exactly, smallest first, within the budget."""
    if limit_bytes == 0:
        return []
    sized = sorted((int(str(r.get("total_pages") or 0)) * PAGE_BYTES, int(str(r["object_id"])))
                   for r in partitions)
    chosen, spent = [], 0
    for size, object_id in sized:
        if limit_bytes is not None and size >= limit_bytes:
            break
        if limit_bytes is not None and spent + size > budget_bytes:
            break
        chosen.append(object_id)
        spent += size
    return chosen


def read_sqlserver_baseline(sql: SqlExecutor, instance: InstanceConfig, *, origin: str,
                            origin_id: str, origin_time: datetime) -> Baseline:
    """Run the baseline's reads on the connected server (no server here: see the tests)."""
    database = instance.database
    read_from = server_utc_now(sql)
    hidden = sql.scalar(HAS_HIDDEN_COLUMNS_SQL) is not None
    tables_sql, columns_sql, keys_sql = catalog_sql(database, hidden)
    what = f"baseline read of database {database}"
    tables = sql.query(tables_sql, what=what)
    columns = sql.query(columns_sql, what=what)
    keys = sql.query(keys_sql, what=what)
    partitions = sql.query(partition_stats_sql(database), what=what)
    indexed = {(int(r["object_id"]), str(r["column_name"]))
               for r in sql.query(leading_index_sql(database), what=what)}
    names = {int(t["object_id"]): (str(t["schema_name"]), str(t["table_name"])) for t in tables}
    limit = int(instance.drill.exact_count_max_mb * 1024 * 1024)
    notes: list[str] = []
    exact: dict[int, int] = {}
    for object_id in tables_to_count(partitions, limit):
        if object_id not in names:
            continue
        schema, table = names[object_id]
        try:
            exact[object_id] = int(sql.scalar(count_sql(database, schema, table),
                                              what=f"row count of {schema}.{table}"))
        except PitrError as exc:
            notes.append(f"{schema}.{table}: no count ({exc.message})")
    newest: dict[tuple[int, str], str | None] = {}
    by_name = {f"{s}.{t}": oid for oid, (s, t) in names.items()}
    for qualified, column in instance.drill.freshness.items():
        schema, table = split_table_name(qualified)
        object_id = by_name.get(f"{schema}.{table}")
        if object_id is None:
            continue
        if (object_id, column) not in indexed and object_id not in exact:
            notes.append(f"{qualified}: no index leads with {column} and the table is too "
                         "large to scan, so its newest value is not recorded")
            continue
        try:
            value = sql.scalar(newest_sql(database, schema, table, column),
                               what=f"newest {column} of {qualified}")
        except PitrError as exc:
            notes.append(f"{qualified}: no newest {column} ({exc.message})")
            continue
        newest[(object_id, column)] = None if value is None else str(value)
    read_to = server_utc_now(sql)
    return baseline_from_rows(
        instance=instance.name, origin=origin, origin_id=origin_id, origin_time=origin_time,
        read_from=read_from, read_to=read_to, tables=tables, columns=columns, keys=keys,
        partitions=partitions, exact=exact, newest=newest, exact_limit_bytes=limit,
        notes=notes)


def baseline_key_of(instance: str, record: SqlServerBackupRecord) -> str:
    return object_key(instance, record.kind, record.id, BASELINE_NAME)


def record_sqlserver_baseline(sql: SqlExecutor, instance: InstanceConfig, repo: Repository,
                              record: SqlServerBackupRecord) -> str | None:
    """Read and store the baseline beside a backup just taken; None (and a warning) on failure.

    Never raises: a backup that worked must not fail because its baseline did not.
    """
    key = baseline_key_of(instance.name, record)
    try:
        finished = row_times_utc(record.rows[0])[1]
        baseline = read_sqlserver_baseline(sql, instance, origin=record.kind,
                                           origin_id=record.id, origin_time=finished)
        repo.put_bytes(key, dump_baseline(baseline))
    except Exception as exc:  # noqa: BLE001 - any failure is a warning, by design
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        log.warning("no drill baseline recorded after %s backup %s of %s: %s", record.kind,
                    record.id, instance.name, text.strip().splitlines()[0])
        return None
    return key


def stored_baselines(repo: Repository, instance: str,
                     records: Iterable[SqlServerBackupRecord]) -> list[StoredBaseline]:
    """The baselines stored beside ``records``, each at its backup's finish time."""
    present = {info.key for area in ("backups", "logs")
               for info in repo.list(f"{instance}/{area}/")
               if info.key.endswith("/" + BASELINE_NAME)}
    found = []
    for record in records:
        key = baseline_key_of(instance, record)
        if key in present:
            found.append(StoredBaseline(key, row_times_utc(record.rows[0])[1]))
    return found
