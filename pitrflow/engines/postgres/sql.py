"""Every SQL statement the PostgreSQL engine sends, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

SERVER_FACTS = """
SELECT current_setting('server_version_num')::int,
       (SELECT system_identifier::text FROM pg_control_system()),
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
       (SELECT timeline_id FROM pg_control_checkpoint()),
       current_setting('wal_level'),
       current_setting('max_wal_senders')::int,
       current_setting('data_checksums'),
       pg_is_in_recovery(),
       now()
"""

SLOT_INFO = """
SELECT slot_type, restart_lsn::text, pg_current_wal_lsn() - restart_lsn, active
  FROM pg_replication_slots WHERE slot_name = %s
"""

CREATE_SLOT = "SELECT pg_create_physical_replication_slot(%s, true)"

SETTING = "SELECT current_setting(%s, true)"

# A transactional message commits with a timestamped commit record, so a
# time target up to this mark is reachable even when the database is idle.
EMIT_MARK = "SELECT now(), pg_logical_emit_message(true, 'pitrflow', %s)::text"

SWITCH_WAL = "SELECT pg_switch_wal()::text"

# pg_receivewal stops at --endpos only once it receives WAL beyond it; a
# flushed commit just after the switch gives it that without waiting for the
# server's next background record.
EMIT_END = "SELECT pg_logical_emit_message(true, 'pitrflow', %s)::text"

SYNC_COMMIT_ON = "SET synchronous_commit = on"

NOW = "SELECT now()"

# The follower's session: its own marker commits must not wait for a synchronous standby
# (which may be the follower's own receiver, or down), only for the local flush.
SYNC_COMMIT_LOCAL = "SET synchronous_commit = local"

# Follow mode, each cycle: the server's flush position, and how far our receiver (the
# walsender serving our slot) has written and flushed, as its last status report said.
FOLLOW_POSITIONS = """
SELECT now(), pg_current_wal_flush_lsn()::text, r.write_lsn::text, r.flush_lsn::text,
       r.sync_state, r.application_name
  FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
 WHERE s.slot_name = %s
"""

FLUSH_LSN = "SELECT pg_current_wal_flush_lsn()::text"

SYNC_STATE = """
SELECT current_setting('synchronous_standby_names'),
       (SELECT sync_state FROM pg_stat_replication WHERE application_name = %s
         ORDER BY sync_state = 'sync' DESC LIMIT 1)
"""

CURRENT_LSN = "SELECT pg_current_wal_lsn()::text"


@dataclass(frozen=True)
class ServerFacts:
    version_num: int
    system_identifier: str
    segment_size: int
    timeline: int
    wal_level: str
    max_wal_senders: int
    data_checksums: bool
    in_recovery: bool
    now: datetime

    @property
    def major(self) -> int:
        return self.version_num // 10000


def server_facts(conn: psycopg.Connection) -> ServerFacts:
    row = conn.execute(SERVER_FACTS).fetchone()
    assert row is not None
    return ServerFacts(int(row[0]), str(row[1]), int(row[2]), int(row[3]), str(row[4]),
                       int(row[5]), row[6] == "on", bool(row[7]), row[8])


def setting(conn: psycopg.Connection, name: str) -> str | None:
    row = conn.execute(SETTING, (name,)).fetchone()
    return None if row is None else row[0]


def next_xid(conn: psycopg.Connection) -> int:
    """The next transaction id to be assigned (xid8, with its epoch); assigns none itself."""
    row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
                       ).fetchone()
    assert row is not None
    return int(row[0])


def server_now(conn: psycopg.Connection) -> datetime:
    row = conn.execute(NOW).fetchone()
    assert row is not None
    return row[0]

WAL_SUMMARIES = """
SELECT start_lsn::text, end_lsn::text FROM pg_available_wal_summaries()
 WHERE tli = %s ORDER BY start_lsn
"""

# What a base backup will send, give or take global/ and pg_wal: the progress total.
DATABASES_SIZE = """
SELECT coalesce(sum(pg_database_size(datname)), 0)::bigint FROM pg_database
 WHERE has_database_privilege(datname, 'CONNECT')
"""


def databases_size(conn: psycopg.Connection) -> int:
    try:
        row = conn.execute(DATABASES_SIZE).fetchone()
    except psycopg.Error:
        return 0  # only an estimate for progress: never a reason to fail a backup
    return int(row[0]) if row else 0
