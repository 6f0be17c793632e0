"""Orphan cleanup: remove what interrupted runs left behind, and nothing else.

A killed backup leaves objects under <instance>/backups/<id>/ with no
manifest; on an object store it may also leave a multipart upload whose
parts are invisible to listings but still stored (and billed); a killed
check leaves a `.probe-` object.  None of these is ever a backup, so they
can go, but only once they are old enough that no running backup can still
own them (`older_than`, default a day, longer than any backup timeout).

Plan first, act second: `plan_orphans` is pure (a listing, the keys the
manifests name, pending uploads and a clock in; a plan with a reason per
item out), `plan_cleanup` gathers its inputs from a repository, and
`execute_cleanup` carries a plan out, re-checking each incomplete backup for
a manifest that appeared since planning.  WAL, timelines, marks, drill
records, and every key a readable manifest names are never in a plan; a
backup whose manifest cannot be read is left alone entirely.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from pitrflow.engines.postgres.catalog.manifest import load_manifest
from pitrflow.errors import ObjectLockedError, PitrError, RepositoryError
from pitrflow.storage.base import ObjectInfo, Repository
from pitrflow.storage.layout import (
    MANIFEST_NAME,
    BackupObjectEntry,
    manifest_key,
    parse_key,
)
from pitrflow.storage.uploads import MultipartRepository, PendingUpload

log = logging.getLogger("pitrflow.cleanup")

DEFAULT_OLDER_THAN = timedelta(hours=24)
# Names only pitrflow's own short-lived writes carry: check_writable's probe,
# the filesystem driver's temporary files.
TEMP_MARKERS = (".probe-", ".tmp-")


@dataclass(frozen=True)
class Removal:
    key: str
    reason: str
    size: int = 0
    # Set for objects of a backup without a manifest: the executor re-checks it.
    incomplete_backup: str | None = None


@dataclass(frozen=True)
class Abort:
    upload: PendingUpload
    reason: str


@dataclass(frozen=True)
class CleanupPlan:
    instance: str
    cutoff: datetime
    removals: tuple[Removal, ...] = ()
    aborts: tuple[Abort, ...] = ()
    # Things that look orphaned but are kept, with why (too young, unreadable manifest).
    kept: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.removals and not self.aborts

    @property
    def bytes_freed(self) -> int:
        return sum(r.size for r in self.removals)


@dataclass
class CleanupResult:
    removed: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _age(now: datetime, when: datetime) -> str:
    hours = (now - when).total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 86400 and seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day" + ("s" if days > 1 else "")
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min"


def _is_temp(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return any(marker in name for marker in TEMP_MARKERS)


# SQL Server keeps log backups apart from full and differential ones (see
# engines/sqlserver/record.py); an interrupted log backup leaves objects there too.
_SQLSERVER_LOG = re.compile(r"^logs/([^/]+)/(.+)$")


def _backup_entry(instance: str, info: ObjectInfo) -> BackupObjectEntry | None:
    parsed = parse_key(instance, info.key, info.size)
    if isinstance(parsed, BackupObjectEntry):
        return parsed
    prefix = f"{instance}/"
    if parsed is None and info.key.startswith(prefix):
        if match := _SQLSERVER_LOG.match(info.key[len(prefix):]):
            return BackupObjectEntry(info.key, match.group(1), match.group(2), info.size)
    return None


def _named_files(data: bytes, key: str) -> list[str]:
    """File names a manifest (PostgreSQL or SQL Server) says belong to its backup."""
    try:
        return [f.name for f in load_manifest(data, key).files]
    except RepositoryError as first:
        from pitrflow.engines.sqlserver.record import load_backup_record

        try:
            return [f.name for f in load_backup_record(data, key).files]
        except PitrError:
            raise first from None


def plan_orphans(instance: str, objects: Iterable[ObjectInfo], named_keys: set[str],
                 unreadable: set[str], uploads: Iterable[PendingUpload], now: datetime,
                 older_than: timedelta) -> CleanupPlan:
    """What to remove, with reasons.  Pure: no repository access.

    `objects` is a listing of the instance (plus any root-level probes);
    `named_keys` every key a readable manifest names; `unreadable` the ids of
    backups whose manifest exists but cannot be read.  Objects and uploads of
    unknown age, or younger than `older_than`, are kept.
    """
    cutoff = now - older_than
    removals: list[Removal] = []
    kept: list[tuple[str, str]] = []
    by_backup: dict[str, list[ObjectInfo]] = {}
    for info in objects:
        entry = _backup_entry(instance, info)
        if entry is not None:
            by_backup.setdefault(entry.backup_id, []).append(info)
        elif _is_temp(info.key) and "/drills/" not in info.key and parse_key(
                instance, info.key, info.size) is None:
            if info.modified is not None and info.modified < cutoff:
                removals.append(Removal(info.key, "leftover temporary object, "
                                        f"{_age(now, info.modified)} old", info.size))
    for backup_id, infos in sorted(by_backup.items()):
        names = {i.key.rsplit("/", 1)[-1] for i in infos}
        if backup_id in unreadable:
            kept.append((f"backup {backup_id}",
                         "its manifest cannot be read: left for pitr verify to judge"))
            continue
        if MANIFEST_NAME in names:
            for info in infos:
                if info.key in named_keys or info.key.endswith("/" + MANIFEST_NAME):
                    continue
                if info.modified is not None and info.modified < cutoff:
                    removals.append(Removal(info.key, f"not named by the manifest of backup "
                                            f"{backup_id}", info.size))
            continue
        ages = [i.modified for i in infos]
        if any(a is None or a >= cutoff for a in ages):
            kept.append((f"backup {backup_id}", f"no manifest, but written within "
                         f"{_span(older_than)}: it may still be running"))
            continue
        newest = max(cast(list[datetime], ages))
        for info in sorted(infos, key=lambda i: i.key):
            removals.append(Removal(
                info.key, f"backup {backup_id} has no manifest (interrupted), newest object "
                f"{_age(now, newest)} old", info.size, incomplete_backup=backup_id))
    aborts: list[Abort] = []
    for upload in sorted(uploads, key=lambda u: (u.key, u.upload_id)):
        if not upload.key.startswith(f"{instance}/"):
            continue
        if upload.initiated < cutoff:
            aborts.append(Abort(upload, f"upload started {_age(now, upload.initiated)} "
                                "ago and never completed (interrupted run)"))
        else:
            kept.append((f"upload of {upload.key}", f"started within {_span(older_than)}: "
                         "it may still be running"))
    clash = {r.key for r in removals} & named_keys
    assert not clash, f"cleanup planned to remove keys a manifest names: {sorted(clash)}"
    return CleanupPlan(instance, cutoff, tuple(removals), tuple(aborts), tuple(kept))


def plan_cleanup(repo: Repository, instance: str, older_than: timedelta = DEFAULT_OLDER_THAN,
                 now: datetime | None = None) -> CleanupPlan:
    """Read the listing, the manifests and pending uploads, then plan (changes nothing)."""
    now = now or datetime.now(UTC)
    objects = list(repo.list(f"{instance}/"))
    objects += [o for o in repo.list(TEMP_MARKERS[0]) if "/" not in o.key]
    named: set[str] = set()
    unreadable: set[str] = set()
    for info in objects:
        parsed = _backup_entry(instance, info)
        if parsed is None or parsed.name != MANIFEST_NAME:
            continue
        try:
            names = _named_files(repo.get_bytes(info.key), info.key)
        except RepositoryError as exc:
            log.warning("manifest %s cannot be read (%s); its backup is left alone",
                        info.key, exc.message)
            unreadable.add(parsed.backup_id)
            continue
        folder = info.key[: -len(MANIFEST_NAME)]
        named.update(folder + name for name in names)
    uploads: list[PendingUpload] = []
    if repo.features.multipart_uploads:
        uploads = list(cast(MultipartRepository, repo).list_uploads(f"{instance}/"))
    return plan_orphans(instance, objects, named, unreadable, uploads, now, older_than)


def execute_cleanup(repo: Repository, plan: CleanupPlan) -> CleanupResult:
    """Carry a plan out; one failure is recorded and the rest still runs."""
    result = CleanupResult()
    completed_since: dict[str, bool] = {}
    for removal in plan.removals:
        backup_id = removal.incomplete_backup
        try:
            if backup_id is not None:
                if backup_id not in completed_since:
                    completed_since[backup_id] = repo.exists(manifest_key(plan.instance,
                                                                          backup_id))
                if completed_since[backup_id]:
                    result.skipped.append((removal.key, f"backup {backup_id} got a manifest "
                                           "since the plan was made"))
                    continue
            repo.delete(removal.key)
            result.removed.append(removal.key)
        except ObjectLockedError as exc:  # not a failure: a later run removes it
            result.skipped.append((removal.key, exc.message))
        except PitrError as exc:
            result.failed.append((removal.key, exc.message))
    if plan.aborts and repo.features.multipart_uploads:
        uploads_repo = cast(MultipartRepository, repo)
        for abort in plan.aborts:
            try:
                uploads_repo.abort_upload(abort.upload)
                result.aborted.append(abort.upload.key)
            except PitrError as exc:
                result.failed.append((f"upload {abort.upload.upload_id} of {abort.upload.key}",
                                      exc.message))
    return result


def plan_lines(plan: CleanupPlan) -> list[str]:
    """The plan as lines of text, for the CLI and a flow artifact."""
    lines = [f"cleanup plan for {plan.instance}: {len(plan.removals)} objects "
             f"({plan.bytes_freed} bytes) to remove, {len(plan.aborts)} uploads to abort, "
             f"only items older than {plan.cutoff.isoformat(timespec='seconds')}"]
    lines += [f"  remove {r.key}: {r.reason}" for r in plan.removals]
    lines += [f"  abort upload {a.upload.upload_id} of {a.upload.key}: {a.reason}"
              for a in plan.aborts]
    lines += [f"  keep {what}: {why}" for what, why in plan.kept]
    return lines
