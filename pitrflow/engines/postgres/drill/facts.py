"""What the drill's generated suites need to know about a PostgreSQL source.

Row counts, primary keys, NOT NULL columns and column types of every user
table, read from the source instance just before the drill restores, so the
restored copy is judged against what it was restored from.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pitrflow.quality.generate import TableFacts

_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND NOT c.relispartition
  AND n.nspname <> 'information_schema'
  AND n.nspname !~ '^pg_'
ORDER BY n.nspname, c.relname
"""

# attnotnull also covers PostgreSQL 18's NOT VALID not-null constraints, which
# existing rows may violate; those are left out (on older servers no 'n'
# constraint rows exist, so the NOT EXISTS is always true).
COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod),
       a.attnotnull AND NOT EXISTS (
           SELECT 1 FROM pg_constraint k
           WHERE k.conrelid = a.attrelid AND k.contype = 'n'
             AND NOT k.convalidated AND k.conkey[1] = a.attnum)
FROM pg_attribute a
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

PRIMARY_KEYS_SQL = """
SELECT i.indrelid, array_agg(a.attname ORDER BY k.ord)
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indisprimary AND i.indrelid = ANY(%s)
GROUP BY i.indrelid
"""


def read_source_catalog(conn: psycopg.Connection) -> list[TableFacts]:
    """Read row counts, primary keys and NOT NULL columns of every user table.

    Partitions are skipped because their parent's count already includes
    them.  When the connection is idle, everything is read in one REPEATABLE
    READ, READ ONLY transaction so all counts describe the same instant; a
    caller already inside a transaction keeps its own isolation.
    """
    if conn.info.transaction_status == TransactionStatus.IDLE:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return _read_catalog(conn)
    return _read_catalog(conn)


def _read_catalog(conn: psycopg.Connection) -> list[TableFacts]:
    tables = conn.execute(_TABLES_SQL).fetchall()
    oids = [oid for oid, _, _ in tables]
    columns: dict[int, list[tuple[str, str, bool]]] = {oid: [] for oid in oids}
    for oid, name, type_name, not_null in conn.execute(COLUMNS_SQL, (oids,)):
        columns[oid].append((name, type_name, not_null))
    keys: dict[int, list[str]] = dict(conn.execute(PRIMARY_KEYS_SQL, (oids,)).fetchall())
    facts: list[TableFacts] = []
    for oid, schema, table in tables:
        count_query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        row = conn.execute(count_query).fetchone()
        facts.append(
            TableFacts(
                schema=schema,
                table=table,
                row_count=int(row[0]) if row else 0,
                primary_key=tuple(keys.get(oid, ())),
                not_null=tuple(name for name, _, nn in columns[oid] if nn),
                column_types={name: type_name for name, type_name, _ in columns[oid]},
            )
        )
    return facts
