"""Baselines: what the source said about each table at one recorded moment.

A drill judges a restore against the source *as it was at the target*, and
only the history can say that: each ship run and each backup reads a
baseline right after its mark or manifest is written and stores it beside
it.  A baseline holds, per table, what is cheap to read without locking the
source: the engine's live-row estimates, an exact count when the table is
small, the newest value of the configured freshness column, the primary key,
the NOT NULL columns and the column types.  `pitrflow.drill.bounds` turns the
baselines on either side of a target into the bounds a restore must meet.

Stored as a sealed record (its own SHA-256, see `catalog.records`) compressed
with zstd: table and column names repeat from table to table, so thousands
of tables stay a few hundred kilobytes at most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import zstandard

from pitrflow.catalog.records import seal, unseal
from pitrflow.errors import RepositoryError

RECORD_KIND = "baseline"
# A baseline is small; refusing to inflate one beyond this keeps a damaged or
# hostile object from exhausting the worker's memory.
_MAX_INFLATED_BYTES = 256 * 1024 * 1024
_ZSTD_LEVEL = 9


@dataclass(frozen=True)
class TableBaseline:
    """One table as the source described it.

    `estimates` are the engine's live-row estimates (PostgreSQL: n_live_tup
    and reltuples; SQL Server: sys.partitions rows), which may disagree with
    each other and with the truth.  `exact` is a count(*) when the table was
    small enough to count.  `changes` are the cumulative (inserted, deleted)
    row counters where the engine keeps them: between two baselines they say
    whether a table only grew, only shrank, or both.  `rewrites` changes when
    the table was truncated or rewritten (PostgreSQL: its relfilenodes).
    `newest` maps a freshness column to its newest value (None: no row had
    one); a column that was not read is absent.
    """

    schema: str
    table: str
    estimates: tuple[int, ...] = ()
    exact: int | None = None
    changes: tuple[int, int] | None = None
    rewrites: str | None = None
    primary_key: tuple[str, ...] = ()
    not_null: tuple[str, ...] = ()
    column_types: dict[str, str] = field(default_factory=dict)
    newest: dict[str, datetime | None] = field(default_factory=dict)

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Baseline:
    """Every user table of one source at one moment, and where that moment sits.

    The facts describe the source somewhere in [read_from, read_to] (the
    snapshot's start and the clock right after it was taken): a baseline is
    before a target when read_to <= target, after it when read_from >= target.
    `origin` names what it was read after: `mark` (a ship run), `backup`,
    `log` (a SQL Server log backup) or `live` (the source read at drill time).
    """

    instance: str
    engine: str
    origin: str
    origin_id: str
    origin_time: datetime
    read_from: datetime
    read_to: datetime
    tables: tuple[TableBaseline, ...] = ()
    exact_limit_bytes: int | None = None
    notes: tuple[str, ...] = ()
    key: str = ""

    def table(self, qualified: str) -> TableBaseline | None:
        return self.by_name().get(qualified)

    def by_name(self) -> dict[str, TableBaseline]:
        return {t.qualified_table: t for t in self.tables}

    def label(self) -> str:
        """How an artifact names it: `mark 2026-01-02T03:04:05Z`, `backup ID (time)`."""
        when = short_time(self.origin_time)
        if self.origin == "mark":
            return f"mark {when}"
        if self.origin == "live":
            return f"the source as read at drill time ({when})"
        return f"{self.origin} {self.origin_id} ({when})"


def short_time(moment: datetime) -> str:
    """A moment as the artifacts show it: UTC, microseconds only when there are some."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _table_body(t: TableBaseline) -> dict[str, Any]:
    body: dict[str, Any] = {"schema": t.schema, "table": t.table}
    if t.estimates:
        body["estimates"] = list(t.estimates)
    if t.exact is not None:
        body["exact"] = t.exact
    if t.changes is not None:
        body["changes"] = list(t.changes)
    if t.rewrites is not None:
        body["rewrites"] = t.rewrites
    if t.primary_key:
        body["primary_key"] = list(t.primary_key)
    not_null = set(t.not_null)
    # One list of [name, type, not_null] keeps column order, which is the
    # order the NOT NULL checks are reported in.
    body["columns"] = [[name, kind, name in not_null] for name, kind in t.column_types.items()]
    extra = [name for name in t.not_null if name not in t.column_types]
    if extra:
        body["not_null_untyped"] = extra
    if t.newest:
        body["newest"] = {column: _iso(value) for column, value in t.newest.items()}
    return body


def dump_baseline(baseline: Baseline) -> bytes:
    """The sealed, compressed record of a baseline."""
    body = {
        "instance": baseline.instance, "engine": baseline.engine,
        "origin": baseline.origin, "origin_id": baseline.origin_id,
        "origin_time": baseline.origin_time.isoformat(),
        "read_from": baseline.read_from.isoformat(), "read_to": baseline.read_to.isoformat(),
        "exact_limit_bytes": baseline.exact_limit_bytes,
        "notes": list(baseline.notes),
        "tables": [_table_body(t) for t in baseline.tables],
    }
    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True)
    return compressor.compress(seal(RECORD_KIND, body))


def _table_from(doc: Mapping[str, Any]) -> TableBaseline:
    columns = [(str(c[0]), str(c[1]), bool(c[2])) for c in doc.get("columns", [])]
    not_null = [name for name, _, nn in columns if nn] + list(doc.get("not_null_untyped", []))
    changes = doc.get("changes")
    return TableBaseline(
        schema=str(doc["schema"]), table=str(doc["table"]),
        estimates=tuple(int(e) for e in doc.get("estimates", [])),
        exact=int(doc["exact"]) if doc.get("exact") is not None else None,
        changes=(int(changes[0]), int(changes[1])) if changes is not None else None,
        rewrites=doc.get("rewrites"),
        primary_key=tuple(str(c) for c in doc.get("primary_key", [])),
        not_null=tuple(not_null),
        column_types={name: kind for name, kind, _ in columns},
        newest={str(k): datetime.fromisoformat(v) if v is not None else None
                for k, v in doc.get("newest", {}).items()},
    )


def load_baseline(data: bytes, key: str) -> Baseline:
    """Inflate, check the seal, and parse; any damage is a RepositoryError naming the key."""
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data)
        raw = reader.read(_MAX_INFLATED_BYTES + 1)
    except zstandard.ZstdError as exc:
        raise RepositoryError(f"{key} is not a zstd-compressed baseline: {exc}",
                              "it may be damaged; the drill uses the next baseline") from None
    if len(raw) > _MAX_INFLATED_BYTES:
        raise RepositoryError(f"{key} inflates beyond {_MAX_INFLATED_BYTES} bytes",
                              "it is not a baseline pitrflow wrote")
    doc = unseal(RECORD_KIND, raw, key)
    try:
        return Baseline(
            instance=str(doc["instance"]), engine=str(doc["engine"]),
            origin=str(doc["origin"]), origin_id=str(doc["origin_id"]),
            origin_time=datetime.fromisoformat(doc["origin_time"]),
            read_from=datetime.fromisoformat(doc["read_from"]),
            read_to=datetime.fromisoformat(doc["read_to"]),
            exact_limit_bytes=doc.get("exact_limit_bytes"),
            notes=tuple(str(n) for n in doc.get("notes", [])),
            tables=tuple(_table_from(t) for t in doc["tables"]),
            key=key,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RepositoryError(f"{key} lacks a valid field: {exc}",
                              "it may be damaged; the drill uses the next baseline") from None


def sort_tables(tables: Sequence[TableBaseline]) -> tuple[TableBaseline, ...]:
    return tuple(sorted(tables, key=lambda t: (t.schema, t.table)))
