"""PostgreSQL's plans, catalogs and outcomes as text, JSON and markdown.

One renderer for each object, shared by the CLI, the flows' artifacts and
the tests, so the three never disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pitrflow.engines.postgres.catalog.cluster import tablespaces_of
from pitrflow.engines.postgres.catalog.manifest import LAYOUT_BUNDLES
from pitrflow.engines.postgres.restore.planner import recoverable_window
from pitrflow.engines.postgres.restore.tail import LatestPoint, latest_point
from pitrflow.engines.postgres.wal.walnames import format_lsn
from pitrflow.render import human_bytes, iso, locked_lines, markdown_table

if TYPE_CHECKING:
    # Types only: a ship-logs run imports this module, and must not pay for the backup
    # and restore executors (and what they import) it never runs.
    from pitrflow.engines.postgres.backup.basebackup import BackupOutcome
    from pitrflow.engines.postgres.catalog.cluster import Database
    from pitrflow.engines.postgres.catalog.manifest import BackupManifest
    from pitrflow.engines.postgres.catalog.snapshot import Catalog
    from pitrflow.engines.postgres.restore.executor import RestoreOutcome
    from pitrflow.engines.postgres.restore.placement import TablespacePlacement
    from pitrflow.engines.postgres.restore.planner import RestorePlan
    from pitrflow.engines.postgres.wal.walship import ShipOutcome


def backup_format(b: BackupManifest) -> str:
    """'v2 bundles' (file-indexed, parallel and delta restores) or 'v1 stream' (one zstd stream)."""
    return "v2 bundles" if b.layout == LAYOUT_BUNDLES else "v1 stream"


def backup_dict(b: BackupManifest) -> dict[str, Any]:
    return {
        "id": b.id, "type": b.type, "parent": b.parent,
        "start_time": iso(b.start_time), "stop_time": iso(b.stop_time),
        "start_lsn": format_lsn(b.start_lsn), "stop_lsn": format_lsn(b.stop_lsn),
        "timeline": b.timeline, "size_bytes": b.size_bytes,
        "database_size_bytes": b.database_size_bytes, "server_version": b.server_version,
        "duration_seconds": b.duration_seconds,
        "format": backup_format(b), "compression": b.compression,
        # {"cipher", "data_key"} when the repository encrypted it; None: stored unencrypted.
        "encryption": b.extra.get("encryption"),
        "tablespaces": [{"oid": t.oid, "name": t.name, "location": t.location}
                        for t in tablespaces_of(b)],
    }


def _annotated(b: BackupManifest, verify: dict[str, Any] | None,
               retention: dict[str, tuple[bool, str]] | None) -> dict[str, Any]:
    data = backup_dict(b)
    status = (verify or {}).get(b.id)
    data["verify"] = ({"ok": status.get("ok"), "at": status.get("verified_at"),
                       "problems": status.get("problems", [])} if status else None)
    if retention is not None and b.id in retention:
        keep, reason = retention[b.id]
        data["retention"] = {"keep": keep, "reason": reason}
    return data


def latest_dict(point: LatestPoint | None) -> dict[str, Any] | None:
    """Where a restore to latest ends; `partial` when it ends inside a partial segment."""
    if point is None:
        return None
    return {"lsn": format_lsn(point.lsn), "timeline": point.timeline, "segment": point.segment,
            "partial": point.partial is not None, "read_at": iso(point.read_at)}


def latest_text(point: LatestPoint | None) -> str:
    if point is None:
        return "latest: -"
    if point.partial is None:
        return (f"latest: {format_lsn(point.lsn)} on timeline {point.timeline}, the end of "
                f"segment {point.segment}")
    return (f"latest: {format_lsn(point.lsn)} or later on timeline {point.timeline}, in the "
            f"PARTIAL segment {point.segment} read at {iso(point.read_at)} (follow mode)")


def info_dict(catalog: Catalog, verify: dict[str, Any] | None = None,
              retention: dict[str, tuple[bool, str]] | None = None) -> dict[str, Any]:
    entries = catalog.wal_entries()
    window = recoverable_window(catalog)
    newest = catalog.newest_mark
    return {
        "instance": catalog.instance,
        "backups": [_annotated(b, verify, retention) for b in catalog.backups],
        "rejected": [{"id": k, "reason": v} for k, v in sorted(catalog.rejected.items())],
        "wal": {
            "first": entries[0].segment if entries else None,
            "last": entries[-1].segment if entries else None,
            "segments": len(entries),
            "size_bytes": sum(e.size for e in entries),
        },
        "marks": {"count": len(catalog.marks),
                  "newest": {"time": iso(newest.time), "lsn": format_lsn(newest.lsn),
                             "timeline": newest.timeline} if newest else None},
        "recoverable": {"from": iso(window.start), "to": iso(window.end),
                        "latest": latest_dict(latest_point(catalog))},
        "restore_points": [{"name": p.name, "time": iso(p.time), "lsn": format_lsn(p.lsn),
                            "timeline": p.timeline} for p in catalog.restore_points],
    }


def info_text(catalog: Catalog, verify: dict[str, Any] | None = None,
              retention: dict[str, tuple[bool, str]] | None = None) -> str:
    data = info_dict(catalog, verify, retention)
    lines = [f"instance {catalog.instance}"]
    if not catalog.backups:
        lines.append("  no backups")
    for b, item in zip(catalog.backups, data["backups"], strict=True):
        chain = f" parent {b.parent}" if b.parent else ""
        status = item["verify"]
        verified = ("verified ok" if status and status["ok"] else
                    "VERIFY FAILED" if status else "not verified")
        kept = item.get("retention")
        keep_text = "" if kept is None else (
            "  kept" if kept["keep"] else "  EXPIRES at next expire")
        lines.append(
            f"  {b.id}  {b.type:<11} {iso(b.stop_time)}  tl {b.timeline}  "
            f"{format_lsn(b.start_lsn)}..{format_lsn(b.stop_lsn)}  "
            f"{human_bytes(b.size_bytes)} (db {human_bytes(b.database_size_bytes)}){chain}"
            f"  {backup_format(b)}  [{verified}]  {_encryption_text(item['encryption'])}"
            f"{keep_text}{_tablespaces_text(b)}")
    for item in data["rejected"]:
        lines.append(f"  {item['id']}  NOT A BACKUP: {item['reason']}")
    wal = data["wal"]
    lines.append(f"wal: {wal['segments']} segments, {wal['first']} .. {wal['last']}, "
                 f"{human_bytes(wal['size_bytes'])} stored")
    rec = data["recoverable"]
    lines.append(f"recoverable: {rec['from'] or '-'} .. {rec['to'] or '-'}")
    lines.append(latest_text(latest_point(catalog)))
    if catalog.restore_points:
        lines.append("restore points (pitr restore --target-name NAME):")
        lines += [f"  {p['name']}  {p['time']}  LSN {p['lsn']}  tl {p['timeline']}"
                  for p in data["restore_points"]]
    return "\n".join(lines)


def _tablespaces_text(b: BackupManifest) -> str:
    spaces = tablespaces_of(b)
    return ("  tablespaces " + ", ".join(f"{t.name}={t.location}" for t in spaces)
            if spaces else "")


def _encryption_text(encryption: dict[str, str] | None) -> str:
    if not encryption:
        return "unencrypted"
    return f"encrypted ({encryption.get('cipher', '?')}, key {encryption.get('data_key', '?')})"


def plan_text(plan: RestorePlan) -> str:
    lines = [
        f"restore plan for {plan.instance}, target {plan.target.describe()}",
        f"  recoverable window: {iso(plan.window_from)} .. {iso(plan.window_to)}",
        "  chain: " + " -> ".join(f"{b.id} ({b.type})" for b in plan.chain),
        f"  consistent at {iso(plan.backup.stop_time)} ({format_lsn(plan.backup.stop_lsn)})",
    ]
    if plan.wal:
        lines.append(f"  WAL: {plan.wal[0].segment} .. {plan.wal[-1].segment} "
                     f"({len(plan.wal)} segments, {human_bytes(plan.wal_bytes)} stored, "
                     f"{human_bytes(plan.wal_replay_bytes)} to replay) on timeline "
                     f"{plan.timeline}")
        if plan.partial is not None:
            lines.append(f"  recoverable point: {format_lsn(plan.partial.end_lsn)} or later, in "
                         f"the PARTIAL segment {plan.partial.segment} (read at "
                         f"{iso(plan.partial.time)})")
    else:
        lines.append("  WAL: none beyond the backup's own")
    lines.append(f"  local disk needed: {human_bytes(plan.disk_bytes_needed)}")
    lines += [f"  - {r}" for r in plan.reasons]
    return "\n".join(lines)


def plan_dict(plan: RestorePlan) -> dict[str, Any]:
    return {
        "instance": plan.instance, "target": plan.target.describe(),
        "chain": [backup_dict(b) for b in plan.chain],
        "wal": {"first": plan.wal[0].segment if plan.wal else None,
                "last": plan.last_segment, "segments": len(plan.wal),
                "stored_bytes": plan.wal_bytes, "replay_bytes": plan.wal_replay_bytes},
        "timeline": plan.timeline, "disk_bytes_needed": plan.disk_bytes_needed,
        "partial": ({"segment": plan.partial.segment, "lsn": format_lsn(plan.partial.end_lsn),
                     "read_at": iso(plan.partial.time)} if plan.partial else None),
        "recoverable": {"from": iso(plan.window_from), "to": iso(plan.window_to)},
        "reasons": plan.reasons,
    }


def plan_rows(plan: RestorePlan) -> list[tuple[str, str]]:
    """The plan as the rows of its artifact table."""
    if plan.wal:
        wal = (f"{plan.wal[0].segment} .. {plan.wal[-1].segment} on timeline {plan.timeline}: "
               f"{len(plan.wal)} segments, {human_bytes(plan.wal_bytes)} stored, "
               f"{human_bytes(plan.wal_replay_bytes)} to replay")
    else:
        wal = "none beyond the backup's own"
    rows = [
        ("instance", plan.instance),
        ("target", plan.target.describe()),
        ("recoverable window", f"{iso(plan.window_from)} .. {iso(plan.window_to)}"),
        ("chain", " -> ".join(f"{b.id} ({b.type})" for b in plan.chain)),
        ("consistent at", f"{iso(plan.backup.stop_time)} ({format_lsn(plan.backup.stop_lsn)})"),
        ("WAL to replay", wal),
        ("local disk needed", human_bytes(plan.disk_bytes_needed)),
    ]
    rows += [("reason", r) for r in plan.reasons]
    return rows


def plan_markdown(plan: RestorePlan, placed: list[str] | None = None) -> str:
    rows = plan_rows(plan) + [("destination", line.strip()) for line in placed or []]
    return markdown_table("Restore plan", rows)


def placement_lines(tablespaces: tuple[TablespacePlacement, ...],
                    excluded: tuple[Database, ...]) -> list[str]:
    """Where the user tablespaces go, and which databases a --db-include restore leaves out."""
    lines = [f"  tablespace {p.describe()}" for p in tablespaces]
    if excluded:
        lines.append("  databases left out (zero-filled, not fetched): "
                     + ", ".join(d.name for d in excluded))
    return lines


def placement_dict(tablespaces: tuple[TablespacePlacement, ...],
                   excluded: tuple[Database, ...]) -> dict[str, Any]:
    return {"tablespaces": [{"oid": p.tablespace.oid, "name": p.tablespace.name,
                             "recorded_location": p.tablespace.location,
                             "directory": str(p.target)} for p in tablespaces],
            "databases_left_out": [d.name for d in excluded]}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def backup_markdown(outcome: BackupOutcome, notes: list[str] | None = None) -> str:
    m = outcome.manifest
    rows = [
        ("backup", m.id), ("type", m.type), ("parent", m.parent or "-"),
        ("instance", m.instance), ("PostgreSQL", str(m.server_version)),
        ("timeline", str(m.timeline)),
        ("LSN range", f"{format_lsn(m.start_lsn)} .. {format_lsn(m.stop_lsn)}"),
        ("started", iso(m.start_time) or "-"), ("finished", iso(m.stop_time) or "-"),
        ("database size", human_bytes(m.database_size_bytes)),
        ("stored size", human_bytes(m.size_bytes)),
        ("ratio", f"{m.database_size_bytes / max(m.size_bytes, 1):.1f}x"),
        ("duration", f"{outcome.seconds:.1f} s"),
        ("throughput", f"{outcome.throughput_mb_s:.0f} MB/s"),
        ("format", backup_format(m) + (
            ": bundles compressed by the worker; parallel and delta restores"
            if m.layout == LAYOUT_BUNDLES else ": one zstd stream, restored on one core")),
        ("compression", m.compression),
        ("objects", str(len(m.files))),
    ]
    if "saved_bytes_vs_full" in m.extra:
        saved = int(m.extra["saved_bytes_vs_full"])
        rows.append(("saved vs the last full",
                     f"{human_bytes(saved)} ({float(m.extra['saved_ratio_vs_full']):.0%})"))
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = f"## Backup {m.id}\n\n| | |\n|---|---|\n{body}\n"
    for note in notes or []:
        text += f"\n> {note}\n"
    return text


def ship_markdown(outcome: ShipOutcome) -> str:
    slot = outcome.slot
    retained = human_bytes(slot.retained_bytes) if slot and slot.retained_bytes is not None else "-"
    rows = [
        ("mark", f"{format_lsn(outcome.mark.lsn)} on timeline {outcome.mark.timeline}"),
        ("mark time", iso(outcome.mark.time) or "-"),
        ("last segment", outcome.mark.last_segment),
        ("segments shipped", str(len(outcome.segments_shipped))),
        ("stored", human_bytes(outcome.bytes_stored)),
        ("lag", f"{outcome.lag.total_seconds():.1f} s"),
        ("slot", f"{slot.name} retains {retained}" if slot else "-"),
        ("duration", f"{outcome.seconds:.1f} s"),
    ]
    if outcome.follower is not None:  # follow mode: this run checked the follower
        f = outcome.follower
        rows[3:5] = [("follower", f"{f.state} on {f.host} (pid {f.pid})"),
                     ("last upload", iso(f.last_upload_at) or "-"),
                     ("recovery point", iso(f.recovery_point) or "-")]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"## WAL ship {outcome.mark.instance}\n\n| | |\n|---|---|\n{body}\n"


def restore_text(outcome: RestoreOutcome) -> str:
    lines = [
        f"restored {outcome.plan.instance} to {outcome.plan.target.describe()} in "
        f"{outcome.pgdata}",
        f"  last replayed transaction: {outcome.last_transaction or 'none after the backup'}",
    ]
    if outcome.stop_reason:
        lines.append(f"  recovery stopped at: {outcome.stop_reason}")
    lines += placement_lines(outcome.tablespaces, outcome.excluded)
    if outcome.excluded:
        # One -c each: DROP DATABASE cannot run inside the transaction one -c string makes.
        drops = " ".join(f"-c 'DROP DATABASE {_quoted(d.name)}'" for d in outcome.excluded)
        lines.append(f"  the databases left out cannot be connected to: drop them with "
                     f"{outcome.connect_hint} {drops}")
    if outcome.delta is not None:
        d = outcome.delta
        lines.append(f"  delta: {d['kept']} files kept, {d['fetched_whole']} fetched whole, "
                     f"{d['patched']} patched, {d['removed']} paths removed, "
                     f"{human_bytes(d['bytes_fetched'])} fetched")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in outcome.phases.items())
    lines += [
        f"  phases: {phases}",
        f"  running on port {outcome.port}" + (f" as user {outcome.run_as}"
                                                 if outcome.run_as else ""),
        f"  connect: {outcome.connect_hint}",
        f"  stop:    {outcome.stop_hint}",
    ]
    return "\n".join(lines)


def restore_markdown(outcome: RestoreOutcome) -> str:
    return "## Restore\n\n```\n" + restore_text(outcome) + "\n```\n\n" + plan_markdown(
        outcome.plan)


def expire_done_text(result: Any) -> str:
    return (f"deleted {len(result.backups_deleted)} backups and {result.wal_deleted} WAL "
            f"segments, {result.bytes_freed} bytes freed")


def expire_text(plan: Any) -> str:
    lines = [f"expire plan for {plan.instance}"]
    for d in plan.decisions:
        lines.append(f"  {'keep  ' if d.keep else 'DELETE'} {d.backup_id}: {d.reason}")
    for backup_id in plan.finish_expiring:
        lines.append(f"  DELETE {backup_id}: finishing an interrupted expire")
    if plan.delete_wal:
        lines.append(f"  DELETE WAL {plan.delete_wal[0].segment} .. {plan.delete_wal[-1].segment}"
                     f" ({len(plan.delete_wal)} segments, "
                     f"{human_bytes(sum(e.size for e in plan.delete_wal))}): older than the "
                     f"oldest kept backup's start")
    if plan.wal_kept_from:
        lines.append(f"  keep   WAL from {plan.wal_kept_from}")
    if plan.delete_partials:
        lines.append(f"  DELETE {len(plan.delete_partials)} partial segments (follow mode): "
                     "older than the kept WAL, or replaced by the whole segment")
    if plan.delete_marks:
        lines.append(f"  DELETE {len(plan.delete_marks)} ship marks older than the oldest kept "
                     "backup")
    if plan.delete_baselines:
        lines.append(f"  DELETE {len(plan.delete_baselines)} drill baselines of those marks and "
                     "backups")
    for point in plan.delete_restore_points:
        lines.append(f"  DELETE restore point {point.name!r}: before the oldest kept backup's "
                     "consistent point, so no kept backup can reach it")
    lines.append("  keep   all timeline history files")
    lines += [f"  note: {n}" for n in plan.notes]
    if plan.empty:
        lines.append("  nothing to delete")
    return "\n".join(lines)


def expire_result_text(result: Any) -> str:
    """What a run deleted, and what Object Lock still protects (with when it lapses)."""
    lines = [f"deleted {len(result.backups_deleted)} backups, {result.wal_deleted} WAL "
             f"segments and {result.marks_deleted} marks, {human_bytes(result.bytes_freed)} "
             "freed"]
    return "\n".join(lines + locked_lines(result.locked))


def expire_markdown(plan: Any, done: bool, result: Any = None) -> str:
    title = "Expired" if done else "Expire plan (dry run)"
    outcome = f"\n```\n{expire_result_text(result)}\n```\n" if result is not None else ""
    return f"## {title}: {plan.instance}\n\n```\n{expire_text(plan)}\n```\n{outcome}"
