"""Incremental backups (PostgreSQL 17+): decide whether one can be taken, then take it.

Every reason an incremental is impossible is checked up front and reported
as one line; when the caller allows it, a full backup is taken instead and
the reason travels with the result so the artifact can say so.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres import sql
from pitrflow.engines.postgres.backup.basebackup import BackupOutcome, take_backup
from pitrflow.engines.postgres.catalog.manifest import BackupManifest
from pitrflow.engines.postgres.catalog.snapshot import Catalog, read_catalog
from pitrflow.engines.postgres.connection import connect
from pitrflow.engines.postgres.wal.walnames import format_lsn, parse_lsn
from pitrflow.errors import BackupRefusedError, CommandFailedError
from pitrflow.storage.base import HashingReader, Repository
from pitrflow.storage.layout import backup_object

log = logging.getLogger("pitrflow.incremental")


@dataclass(frozen=True)
class IncrementalDecision:
    parent: BackupManifest | None
    refusal: str | None
    hint: str | None = None


def _summaries_cover(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    """True when the WAL summaries form one unbroken cover of [start, end)."""
    reached = start
    for low, high in sorted(ranges):
        if low > reached:
            break
        reached = max(reached, high)
        if reached >= end:
            return True
    return reached >= end


def decide_parent(catalog: Catalog, server_major: int, timeline: int, summarize_wal: str | None,
                  summaries: list[tuple[int, int]], current_lsn: int) -> IncrementalDecision:
    """Pure: the parent an incremental would use, or why there can be none."""
    if server_major < 17:
        return IncrementalDecision(
            None, f"PostgreSQL {server_major} has no incremental backup (it needs 17 or newer)",
            "take full backups, or upgrade the server")
    if summarize_wal != "on":
        return IncrementalDecision(
            None, "summarize_wal is off on the server, so it keeps no WAL summaries",
            "ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); then take a full "
            "backup")
    if not catalog.backups:
        why = "there is no backup of the instance yet"
        if catalog.rejected:
            why += f" (unusable: {', '.join(sorted(catalog.rejected))})"
        return IncrementalDecision(None, why, "take a full backup first")
    newest = max(catalog.backups, key=lambda b: (b.stop_lsn, b.stop_time))
    rejected_newer = [bid for bid in catalog.rejected if bid > newest.id]
    if newest.timeline != timeline:
        return IncrementalDecision(
            None, f"the server is on timeline {timeline}, the newest backup {newest.id} on "
            f"timeline {newest.timeline}", "take a full backup on the new timeline")
    # The summarizer trails the newest WAL a little and the server waits for it,
    # so only the stretch from the parent's start to the newest summary must be whole.
    summarized_to = max((high for _, high in summaries), default=0)
    earliest = min((low for low, _ in summaries), default=None)
    if earliest is None or earliest > newest.start_lsn or (
            summarized_to > newest.start_lsn
            and not _summaries_cover(summaries, newest.start_lsn, summarized_to)):
        return IncrementalDecision(
            None, f"the server's WAL summaries no longer cover {format_lsn(newest.start_lsn)}, "
            f"the start of parent {newest.id}",
            "raise wal_summary_keep_time, or take a full backup")
    if rejected_newer:
        log.info("ignoring unusable newer backups %s; parent is %s", rejected_newer, newest.id)
    return IncrementalDecision(newest, None)


def _fetch_parent_manifest(repo: Repository, parent: BackupManifest, directory: Path) -> Path:
    entry = parent.file("backup_manifest")
    if entry is None:
        raise BackupRefusedError(f"backup {parent.id} has no backup_manifest",
                                 "take a full backup")
    key = backup_object(parent.instance, parent.id, entry.name)
    reader = HashingReader(repo.open_reader(key), key)
    try:
        data = reader.read()
    finally:
        reader.close()
    reader.verify(entry.sha256, entry.size)
    path = directory / "parent_backup_manifest"
    path.write_bytes(data)
    return path


def take_incremental(instance: InstanceConfig, repo: Repository,
                     allow_full_fallback: bool = True) -> BackupOutcome:
    with connect(instance) as conn:
        facts = sql.server_facts(conn)
        summarize = sql.setting(conn, "summarize_wal") if facts.major >= 17 else None
        summaries = []
        if facts.major >= 17:
            summaries = [(parse_lsn(a), parse_lsn(b)) for a, b in
                         conn.execute(sql.WAL_SUMMARIES, (facts.timeline,)).fetchall()]
        current = parse_lsn(conn.execute(sql.CURRENT_LSN).fetchone()[0])  # type: ignore[index]
    catalog = read_catalog(repo, instance.name)
    decision = decide_parent(catalog, facts.major, facts.timeline, summarize, summaries, current)
    if decision.parent is None:
        assert decision.refusal is not None
        message = f"cannot take an incremental backup of {instance.name}: {decision.refusal}"
        if not allow_full_fallback:
            raise BackupRefusedError(message, decision.hint)
        log.warning("%s; taking a full backup instead", message)
        outcome = take_backup(instance, repo)
        return replace(outcome, notes=(f"{message}; a full backup was taken instead",))
    parent = decision.parent
    with tempfile.TemporaryDirectory(prefix="pitrflow-inc-") as tmp:
        manifest_file = _fetch_parent_manifest(repo, parent, Path(tmp))
        try:
            fulls = [b for b in catalog.backups if b.type == "full"]
            reference = max(fulls, key=lambda b: b.stop_lsn).size_bytes if fulls else None
            outcome = take_backup(instance, repo, parent=parent,
                                  parent_manifest_file=manifest_file,
                                  full_size_reference=reference)
        except CommandFailedError as exc:
            if "WAL summar" not in exc.message or not allow_full_fallback:
                raise
            log.warning("%s; taking a full backup instead", exc.message)
            outcome = take_backup(instance, repo)
            return replace(outcome, notes=(f"incremental failed ({exc.message}); a full "
                                           "backup was taken instead",))
    return outcome
