"""The replication slot pitrflow owns for each instance.

Created before the first backup, so the server keeps every WAL segment from
that backup's start until a ship run has stored it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from pitrflow.engines.postgres import sql
from pitrflow.errors import ServerError

log = logging.getLogger("pitrflow.slots")


@dataclass(frozen=True)
class SlotInfo:
    name: str
    restart_lsn: str | None
    retained_bytes: int | None
    active: bool


def slot_info(conn: psycopg.Connection, slot: str) -> SlotInfo | None:
    row = conn.execute(sql.SLOT_INFO, (slot,)).fetchone()
    if row is None:
        return None
    if row[0] != "physical":
        raise ServerError(f"replication slot {slot} exists but is {row[0]}, not physical",
                          "drop it or set a different slot name in the instance's config")
    return SlotInfo(slot, row[1], int(row[2]) if row[2] is not None else None, bool(row[3]))


def ensure_slot(conn: psycopg.Connection, slot: str) -> SlotInfo:
    info = slot_info(conn, slot)
    if info is not None:
        return info
    try:
        conn.execute(sql.CREATE_SLOT, (slot,))
    except psycopg.errors.DuplicateObject:
        pass  # created concurrently by another run: fine
    except psycopg.Error as exc:
        raise ServerError(
            f"cannot create replication slot {slot}: {exc.diag.message_primary or exc}",
            "the backup role needs REPLICATION; raise max_replication_slots if it is full",
        ) from None
    log.info("created physical replication slot %s", slot)
    info = slot_info(conn, slot)
    assert info is not None
    return info
