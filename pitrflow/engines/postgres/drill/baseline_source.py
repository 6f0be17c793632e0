"""Read a baseline from a PostgreSQL source: cheaply, and without holding locks.

Everything is read in one REPEATABLE READ, READ ONLY transaction, so all
facts describe one snapshot, whose moment lies between the transaction's
now() and the clock right after its first query.  The catalog, the
cumulative statistics and the live-row estimates (pg_class.reltuples,
pg_stat_user_tables.n_live_tup, summed over a partitioned table's leaves)
take no lock at all.  What must touch a table (its size, an exact count, the
newest freshness value) runs inside a savepoint that is rolled back at once,
which releases the lock it took, under a short lock_timeout: a table someone
holds locked is simply left with its estimates, and no DDL ever queues
behind a baseline for long.

Exact counts go only to tables smaller than `exact_limit_bytes` (the
instance's drill.exact_count_max_mb), smallest first, and stop once
_EXACT_BUDGET_BYTES have been counted in one baseline; a freshness column is
read only where a B-tree index leads with it or the table was small enough
to count.  A TRUNCATE that commits between the snapshot and a count would
make the count see the new, empty file (TRUNCATE is not MVCC-safe), so a
count is kept only if the table's files are still those of the snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pitrflow.config import InstanceConfig
from pitrflow.drill.baseline import Baseline, TableBaseline, dump_baseline, sort_tables
from pitrflow.engines.postgres.catalog.manifest import BackupManifest, Mark
from pitrflow.engines.postgres.connection import connect
from pitrflow.engines.postgres.drill.facts import COLUMNS_SQL, PRIMARY_KEYS_SQL
from pitrflow.quality.suites import split_table_name
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import baseline_key, mark_key

log = logging.getLogger("pitrflow.baseline")

_EXACT_BUDGET_BYTES = 512 * 1024 * 1024
_LOCK_TIMEOUT = "200ms"
_STATEMENT_TIMEOUT = "60s"
_MAX_NOTES = 20

# One row per member of each user table's inheritance tree (the table itself
# included): partitions and inheritance children are counted by their root,
# as SELECT count(*) on the root counts them.  Catalog reads take no locks.
TREE_SQL = """
WITH RECURSIVE roots AS (
    SELECT c.oid, n.nspname, c.relname
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND NOT c.relispartition
      AND n.nspname <> 'information_schema'
      AND n.nspname !~ '^pg_'
), tree(root, relid) AS (
    SELECT oid, oid FROM roots
    UNION
    SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.relid
)
SELECT r.oid, r.nspname, r.relname, has_table_privilege(r.oid, 'SELECT'),
       l.oid, l.relkind, l.reltuples::bigint, l.relfilenode::bigint,
       s.n_live_tup, s.n_tup_ins, s.n_tup_del
FROM roots r
JOIN tree t ON t.root = r.oid
JOIN pg_class l ON l.oid = t.relid
LEFT JOIN pg_stat_all_tables s ON s.relid = l.oid
ORDER BY r.nspname, r.relname, l.oid
"""

# B-tree indexes by leading column: max() on such a column reads one index page.
LEADING_BTREE_SQL = """
SELECT i.indrelid, a.attname
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = ANY(%s) AND am.amname = 'btree' AND i.indpred IS NULL
"""

SNAPSHOT_TIMES_SQL = "SELECT now(), clock_timestamp()"
SIZES_SQL = "SELECT l, pg_relation_size(l) FROM unnest(%s::oid[]) AS l"
FILENODES_SQL = ("SELECT string_agg(pg_relation_filenode(l)::text, ',' ORDER BY l) "
                 "FROM unnest(%s::oid[]) AS l")


@dataclass
class _Tree:
    oid: int
    schema: str
    table: str
    can_select: bool
    leaves: list[int] = field(default_factory=list)
    reltuples: list[int] = field(default_factory=list)
    filenodes: list[str] = field(default_factory=list)
    live: int | None = None
    inserted: int | None = None
    deleted: int | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def rewrites(self) -> str:
        return ",".join(self.filenodes)

    def identifier(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.table))


def _trees(rows: list[tuple[Any, ...]]) -> dict[int, _Tree]:
    trees: dict[int, _Tree] = {}
    for (root, schema, table, can_select, leaf, relkind, reltuples, filenode,
         live, inserted, deleted) in rows:
        tree = trees.setdefault(int(root), _Tree(int(root), str(schema), str(table),
                                                 bool(can_select)))
        if relkind != "r":
            continue  # a partitioned parent stores no rows of its own
        tree.leaves.append(int(leaf))
        tree.reltuples.append(int(reltuples))
        tree.filenodes.append(str(filenode))
        if live is not None:
            tree.live = (tree.live or 0) + int(live)
            tree.inserted = (tree.inserted or 0) + int(inserted)
            tree.deleted = (tree.deleted or 0) + int(deleted)
    return trees


class _Notes(list[str]):
    def add(self, text: str) -> None:
        self.append(text)

    def bounded(self) -> tuple[str, ...]:
        if len(self) <= _MAX_NOTES:
            return tuple(self)
        return (*self[:_MAX_NOTES], f"and {len(self) - _MAX_NOTES} more")


def read_baseline(conn: psycopg.Connection, *, instance: str, origin: str, origin_id: str,
                  origin_time: datetime, freshness: Mapping[str, str],
                  exact_limit_bytes: int | None,
                  statement_timeout: str = _STATEMENT_TIMEOUT) -> Baseline:
    """Read every user table's baseline facts in one snapshot.

    `exact_limit_bytes` None counts every table exactly (the drill's read of
    the live source, which is allowed to be slow: pass statement_timeout "0"
    too); 0 counts none.  A read slower than `statement_timeout` is dropped
    with a note, leaving the table its estimates.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("read_baseline needs an idle connection: it opens its own snapshot")
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(_LOCK_TIMEOUT)))
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
            sql.Literal(statement_timeout)))
        times = conn.execute(SNAPSHOT_TIMES_SQL).fetchone()  # takes the snapshot
        assert times is not None
        read_from, read_to = times[0], times[1]
        notes = _Notes()
        trees = _trees(conn.execute(TREE_SQL).fetchall())
        oids = list(trees)
        columns: dict[int, list[tuple[str, str, bool]]] = {oid: [] for oid in oids}
        for oid, name, type_name, not_null in conn.execute(COLUMNS_SQL, (oids,)):
            columns[oid].append((name, type_name, not_null))
        keys: dict[int, list[str]] = dict(conn.execute(PRIMARY_KEYS_SQL, (oids,)).fetchall())
        indexed: set[tuple[int, str]] = {(int(r[0]), str(r[1])) for r in
                                         conn.execute(LEADING_BTREE_SQL, (oids,))}
        sizes = _sizes(conn, trees, notes)
        exact = _exact_counts(conn, trees, sizes, exact_limit_bytes, notes)
        wanted = _freshness_by_table(freshness)
        tables = []
        for oid, tree in trees.items():
            # A table found locked is not asked again (each try waits the lock timeout).
            fresh_columns = wanted.get(tree.qualified, ()) if oid in sizes else ()
            newest = _newest(conn, tree, fresh_columns, indexed, oid in exact, notes)
            estimates = tuple(e for e in (tree.live, _reltuples(tree)) if e is not None)
            changes = ((tree.inserted, tree.deleted)
                       if tree.inserted is not None and tree.deleted is not None else None)
            tables.append(TableBaseline(
                schema=tree.schema, table=tree.table, estimates=estimates,
                exact=exact.get(oid), changes=changes, rewrites=tree.rewrites,
                primary_key=tuple(keys.get(oid, ())),
                not_null=tuple(name for name, _, nn in columns[oid] if nn),
                column_types={name: kind for name, kind, _ in columns[oid]},
                newest=newest,
            ))
    return Baseline(instance=instance, engine="postgresql", origin=origin, origin_id=origin_id,
                    origin_time=origin_time, read_from=read_from, read_to=read_to,
                    tables=sort_tables(tables), exact_limit_bytes=exact_limit_bytes,
                    notes=notes.bounded())


def _reltuples(tree: _Tree) -> int | None:
    # -1: never vacuumed or analyzed, so no estimate (PostgreSQL 14+).
    if not tree.reltuples or any(r < 0 for r in tree.reltuples):
        return None if tree.leaves else 0
    return sum(tree.reltuples)


def _sizes(conn: psycopg.Connection, trees: Mapping[int, _Tree], notes: _Notes) -> dict[int, int]:
    """Each tree's on-disk size; a tree with a locked member has no size (so no count)."""
    leaves = [leaf for tree in trees.values() for leaf in tree.leaves]
    by_leaf = _leaf_sizes(conn, leaves)
    if by_leaf is None:
        # One table is locked: ask table by table, so only that one goes without.
        by_leaf = {}
        for leaf in leaves:
            one = _leaf_sizes(conn, [leaf])
            if one is not None:
                by_leaf.update(one)
    sizes = {}
    for oid, tree in trees.items():
        if all(leaf in by_leaf for leaf in tree.leaves):
            sizes[oid] = sum(by_leaf[leaf] for leaf in tree.leaves)
        else:
            notes.add(f"{tree.qualified}: locked, so neither sized nor counted")
    return sizes


def _leaf_sizes(conn: psycopg.Connection, leaves: list[int]) -> dict[int, int] | None:
    """pg_relation_size of each leaf in a savepoint rolled back at once; None if locked."""
    try:
        with conn.transaction() as savepoint:
            found = {int(oid): int(size or 0)
                     for oid, size in conn.execute(SIZES_SQL, (leaves,)).fetchall()}
            raise psycopg.Rollback(savepoint)  # frees the locks pg_relation_size took
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
        return None
    return found


def _exact_counts(conn: psycopg.Connection, trees: Mapping[int, _Tree], sizes: Mapping[int, int],
                  limit: int | None, notes: _Notes) -> dict[int, int]:
    counts: dict[int, int] = {}
    if limit == 0:
        return counts
    spent = 0
    small = sorted((size, oid) for oid, size in sizes.items()
                   if limit is None or size < limit)
    for size, oid in small:
        tree = trees[oid]
        if not tree.can_select:
            notes.add(f"{tree.qualified}: no SELECT privilege, estimates only")
            continue
        if limit is not None and spent + size > _EXACT_BUDGET_BYTES:
            notes.add(f"exact counts stopped after {spent} bytes; larger tables are estimated")
            break
        query = sql.SQL("SELECT count(*) FROM {}").format(tree.identifier())
        ok, counted = _read_and_release(conn, tree, query, notes, "count")
        if ok and counted is not None:
            counts[oid] = int(str(counted))
            spent += size
    return counts


def _read_and_release(conn: psycopg.Connection, tree: _Tree, query: sql.Composed,
                      notes: _Notes, what: str) -> tuple[bool, object]:
    """One read of a table inside a savepoint rolled back at once (freeing its lock).

    Returns (True, value), or (False, None) with a note when the read failed or
    the table was truncated or rewritten since the snapshot.
    """
    value: object = None
    files = ""
    try:
        with conn.transaction() as savepoint:
            row = conn.execute(query).fetchone()
            value = row[0] if row else None
            now = conn.execute(FILENODES_SQL, (tree.leaves,)).fetchone()
            files = (now[0] if now else None) or ""
            raise psycopg.Rollback(savepoint)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
        notes.add(f"{tree.qualified}: locked or slow, no {what}")
        return False, None
    except psycopg.errors.InsufficientPrivilege:
        notes.add(f"{tree.qualified}: no SELECT privilege, no {what}")
        return False, None
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn,
            psycopg.errors.InternalError_):
        notes.add(f"{tree.qualified}: dropped or altered during the {what}")
        return False, None
    if files != tree.rewrites:
        notes.add(f"{tree.qualified}: truncated or rewritten during the {what}, not kept")
        return False, None
    return True, value


def _freshness_by_table(freshness: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    by_table: dict[str, tuple[str, ...]] = {}
    for qualified, column in freshness.items():
        try:
            schema, table = split_table_name(qualified)
        except ValueError:
            continue  # the config loader already names a malformed key
        by_table[f"{schema}.{table}"] = (*by_table.get(f"{schema}.{table}", ()), column)
    return by_table


def _newest(conn: psycopg.Connection, tree: _Tree, columns: tuple[str, ...],
            indexed: set[tuple[int, str]], counted: bool, notes: _Notes,
            ) -> dict[str, datetime | None]:
    """Newest value of each freshness column that is cheap to read (None: no row has one)."""
    newest: dict[str, datetime | None] = {}
    for column in columns:
        if not tree.can_select:
            notes.add(f"{tree.qualified}: no SELECT privilege, no newest {column}")
            continue
        if (tree.oid, column) not in indexed and not counted:
            notes.add(f"{tree.qualified}: no index leads with {column} and the table is too "
                      "large to scan, so its newest value is not recorded")
            continue
        query = sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column),
                                                        tree.identifier())
        ok, value = _read_and_release(conn, tree, query, notes, f"read of the newest {column}")
        if not ok:
            continue
        if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
            notes.add(f"{tree.qualified}.{column} is not a timestamp with time zone")
            continue
        newest[column] = value if isinstance(value, datetime) else None
    return newest


def exact_limit_bytes(instance: InstanceConfig) -> int:
    return int(instance.drill.exact_count_max_mb * 1024 * 1024)


def record_baseline(instance: InstanceConfig, repo: Repository, key: str, *, origin: str,
                    origin_id: str, origin_time: datetime) -> str | None:
    """Read the source's baseline and store it under `key`; None (and a warning) on failure.

    Never raises: a ship run or a backup that worked must not fail because
    its baseline could not be read; the drill then uses the next baseline.
    """
    try:
        with connect(instance) as conn:
            baseline = read_baseline(conn, instance=instance.name, origin=origin,
                                     origin_id=origin_id, origin_time=origin_time,
                                     freshness=instance.drill.freshness,
                                     exact_limit_bytes=exact_limit_bytes(instance))
        repo.put_bytes(key, dump_baseline(baseline))
    except Exception as exc:  # noqa: BLE001 - any failure is a warning, by design
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        log.warning("no drill baseline recorded after %s %s of %s: %s", origin, origin_id,
                    instance.name, text.strip().splitlines()[0])
        return None
    return key


def record_mark_baseline(instance: InstanceConfig, repo: Repository, mark: Mark) -> str | None:
    """The baseline beside a ship run's mark, named after it."""
    key = baseline_key(instance.name, mark.time, mark.timeline, mark.lsn, "mark")
    return record_baseline(instance, repo, key, origin="mark",
                           origin_id=mark_key(instance.name, mark.time, mark.timeline, mark.lsn),
                           origin_time=mark.time)


def record_backup_baseline(instance: InstanceConfig, repo: Repository,
                           manifest: BackupManifest) -> str | None:
    """The baseline read right after a backup's manifest, named after its stop point."""
    key = baseline_key(instance.name, manifest.stop_time, manifest.timeline, manifest.stop_lsn,
                       "backup")
    return record_baseline(instance, repo, key, origin="backup", origin_id=manifest.id,
                           origin_time=manifest.stop_time)
