"""One WAL ship run: stream from the owned slot to a segment boundary, store, mark.

Each run (1) commits a timestamped marker, (2) forces a segment switch,
(3) runs pg_receivewal up to the next segment boundary, so it ends on whole
segments, (4) stores every new segment compressed under a key carrying its
SHA-256, (5) checks the repository's WAL for gaps, and (6) writes a mark:
everything up to that LSN is shipped.  Then it records the drill's baseline
beside the mark (pitrflow.engines.postgres.drill.baseline_source).

The worker's disk may be new on every run.  pg_receivewal starts after the
newest segment it finds locally, so the run seeds its spool with a sparse
placeholder named after the repository's newest segment: streaming resumes
right after what is durably stored, even if the slot moved further.

When a follower (follow.py) is in charge of the instance, a ship run does not
stream: it checks the follower's heartbeat and fails when the follower is
behind or gone (follow_status.py).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pitrflow import procs
from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres import commands, sql
from pitrflow.engines.postgres.binaries import find_binaries
from pitrflow.engines.postgres.catalog.manifest import Mark, dump_mark, load_mark
from pitrflow.engines.postgres.catalog.snapshot import Catalog, read_catalog
from pitrflow.engines.postgres.connection import connect, libpq_args, libpq_env
from pitrflow.engines.postgres.drill.baseline_source import record_mark_baseline
from pitrflow.engines.postgres.wal.follow_status import (
    FollowerStatus,
    follower_health,
    follower_in_charge,
    read_status,
)
from pitrflow.engines.postgres.wal.slots import SlotInfo, ensure_slot, slot_info
from pitrflow.engines.postgres.wal.timelines import timeline_path
from pitrflow.engines.postgres.wal.walnames import (
    format_lsn,
    is_history_name,
    is_segment_name,
    parse_lsn,
    parse_segment_name,
    segment_name,
)
from pitrflow.engines.postgres.wal.walstore import (
    drop_superseded_partials,
    store_history,
    store_segment,
)
from pitrflow.errors import FollowerError, ServerError, WalGapError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import mark_key

log = logging.getLogger("pitrflow.ship")


@dataclass(frozen=True)
class ShipOutcome:
    mark: Mark
    segments_shipped: list[str]
    bytes_stored: int
    seconds: float
    slot: SlotInfo | None
    lag: timedelta
    history_files: list[str]
    # Set when a follower is in charge: this run checked it instead of shipping.
    follower: FollowerStatus | None = None


def _seed_spool(spool: Path, catalog: Catalog, timeline: int, segment_size: int) -> str | None:
    """Placeholder for the newest stored segment of `timeline`, so streaming resumes after it."""
    stored = catalog.wal.get(timeline)
    if not stored:
        return None
    segno = max(stored)
    name = segment_name(timeline, segno, segment_size)
    with open(spool / name, "wb") as handle:
        handle.truncate(segment_size)  # sparse: no real disk used
    return name


def find_gaps(catalog: Catalog, timeline: int, since_lsn: int | None = None) -> list[str]:
    """Segments missing on this timeline's path, from `since_lsn` (default: the first
    stored or needed segment) to the newest stored one."""
    size = catalog.segment_size
    path = timeline_path(timeline, catalog.histories)
    names: list[str] = []
    starts = [b.start_lsn // size for b in catalog.backups]
    for span in path:
        stored = catalog.wal.get(span.timeline, {})
        if not stored:
            continue
        low = span.begin // size
        first = min(stored)
        if since_lsn is not None:
            first = max(low, since_lsn // size)
        elif starts:
            first = min(first, max(min(starts), low))
        last = max(stored)
        if span.end is not None:
            last = min(last, (span.end - 1) // size)
        names.extend(segment_name(span.timeline, n, size)
                     for n in range(first, last + 1) if n not in stored)
    return names


def check_follower(instance: InstanceConfig, repo: Repository, started: float) -> ShipOutcome:
    """The ship run of follow mode: the follower's health, as a ship outcome or an error."""
    health = follower_health(instance, repo, datetime.now(UTC))
    if not health.ok:
        raise FollowerError(health.problem, "the follower ships this instance's WAL (follow "
                            "mode): see its log (journalctl -u pitrflow-follow@"
                            f"{instance.name}, or the follow_wal flow run) and pitr check "
                            f"{instance.name}")
    catalog = read_catalog(repo, instance.name)
    newest = catalog.newest_mark
    if newest is None:
        raise FollowerError(f"the follower of {instance.name} has written no mark yet",
                            "marks follow within mark_interval seconds of the first upload")
    mark = load_mark(repo.get_bytes(newest.key), newest.key)
    assert health.status is not None
    log.info("follow mode: the follower of %s is healthy (%s)", instance.name, health.detail)
    return ShipOutcome(mark, [], 0, time.monotonic() - started, None,
                       timedelta(seconds=health.lag_seconds or 0.0), [], health.status)


def ship_wal(instance: InstanceConfig, repo: Repository) -> ShipOutcome:
    started = time.monotonic()
    if follower_in_charge(instance, read_status(repo, instance.name), datetime.now(UTC)):
        return check_follower(instance, repo, started)
    with connect(instance) as conn:
        facts = sql.server_facts(conn)
        if facts.in_recovery:
            raise ServerError(f"instance {instance.name} is a standby",
                              "ship from the primary (standby shipping is not supported yet)")
        ensure_slot(conn, instance.slot_name)
        conn.execute(sql.SYNC_COMMIT_ON)
        row = conn.execute(sql.EMIT_MARK, (f"ship mark {instance.name}",)).fetchone()
        assert row is not None
        # now() is the marker transaction's start; its commit record carries a
        # later timestamp, so every target up to mark_time finds a stop record.
        mark_time: datetime = row[0]
        switch_lsn = parse_lsn(conn.execute(sql.SWITCH_WAL).fetchone()[0])  # type: ignore[index]
        conn.execute(sql.EMIT_END, (f"ship end {instance.name}",))
        facts = sql.server_facts(conn)
    size = facts.segment_size
    end_lsn = -(-switch_lsn // size) * size  # round up to the next segment boundary
    bins = find_binaries(facts.major, instance.bin_dir, needs=("pg_receivewal",))
    catalog = read_catalog(repo, instance.name, marks=False)
    catalog.segment_size = size
    env, secrets = libpq_env(instance)
    shipped: list[str] = []
    histories: list[str] = []
    stored_bytes = 0
    with tempfile.TemporaryDirectory(prefix="pitrflow-ship-") as tmp:
        spool = Path(tmp)
        placeholder = _seed_spool(spool, catalog, facts.timeline, size)
        argv = commands.receivewal_argv(bins, libpq_args(instance), spool,
                                        slot=instance.slot_name, end_lsn=end_lsn)
        procs.run(argv, env=env, secrets=secrets, timeout=instance.ship_timeout_seconds,
                  what="pg_receivewal")
        for path in sorted(spool.iterdir()):
            if is_history_name(path.name) and store_history(repo, catalog, path):
                histories.append(path.name)
        for path in sorted(spool.iterdir()):
            if not is_segment_name(path.name) or path.name == placeholder:
                continue  # .partial files are never shipped: runs end on whole segments
            tli, segno = parse_segment_name(path.name, size)
            if segno in catalog.wal.get(tli, {}):
                continue
            entry = store_segment(repo, instance.name, path, tli)
            # The snapshot taken before streaming, plus what this run stored, is the
            # repository now: no second listing (thousands of keys on S3) is needed.
            catalog.wal.setdefault(tli, {})[segno] = entry
            stored_bytes += entry.size
            shipped.append(path.name)
            os.unlink(path)
    drop_superseded_partials(repo, catalog)  # a follower stopped mid-segment left one
    newest = catalog.newest_backup_on()
    older_gaps = find_gaps(catalog, facts.timeline)
    # Only a gap after the newest backup's start breaks recent restores; an
    # older one narrows the window (pitr check and verify report it) and must
    # not block shipping until the old backups expire.
    gaps = find_gaps(catalog, facts.timeline, newest.start_lsn) if newest else older_gaps
    if older_gaps and not gaps:
        log.warning("the WAL of %s before backup %s has a gap (%s): restores to points "
                    "before that backup are impossible", instance.name,
                    newest.id if newest else "-", ", ".join(older_gaps[:3]))
    if gaps:
        raise WalGapError(
            f"the WAL of {instance.name} in the repository has a gap: missing "
            f"{', '.join(gaps[:5])}" + (f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""),
            "restores across the gap are impossible: take a new full backup now "
            "(pitr backup full) so the recoverable window restarts after it",
        )
    last_segno = (end_lsn - 1) // size
    last_name = segment_name(facts.timeline, last_segno, size)
    if last_segno not in catalog.wal.get(facts.timeline, {}):
        raise WalGapError(
            f"pg_receivewal stopped before segment {last_name} (end {format_lsn(end_lsn)})",
            "see the pg_receivewal lines in the log; the next run will retry",
        )
    mark = Mark(instance=instance.name, timeline=facts.timeline, lsn=end_lsn, time=mark_time,
                last_segment=last_name)
    repo.put_bytes(mark_key(instance.name, mark_time, facts.timeline, end_lsn), dump_mark(mark))
    record_mark_baseline(instance, repo, mark)  # never raises: a warning at worst
    with connect(instance) as conn:
        slot = slot_info(conn, instance.slot_name)
        lag = sql.server_now(conn) - mark_time
    log.info("shipped %d segments of %s up to %s (%s)", len(shipped), instance.name,
             format_lsn(end_lsn), last_name)
    return ShipOutcome(mark, shipped, stored_bytes, time.monotonic() - started, slot, lag,
                       histories)
