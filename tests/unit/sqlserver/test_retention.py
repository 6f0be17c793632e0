"""SQL Server retention: what a plan keeps and deletes and why, and how an expire runs.

Catalogs are built from recorded msdb rows (placeholder files with real SHA-256 in a
filesystem repository), so every decision is checked on the rows a server wrote.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pitrflow.config import RetentionConfig
from pitrflow.engines.sqlserver import ops
from pitrflow.engines.sqlserver.catalog import (
    EXPIRING_REASON,
    SqlServerCatalog,
    import_recorded_rows,
    read_sqlserver_catalog,
)
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.maintenance import expire_text, sqlserver_expire
from pitrflow.engines.sqlserver.msdb import rows_from_json
from pitrflow.engines.sqlserver.retention import (
    NO_POLICY,
    SqlServerExpirePlan,
    plan_sqlserver_expire,
)
from pitrflow.engines.sqlserver.verify import log_chain
from pitrflow.storage.base import ObjectInfo
from pitrflow.storage.fs import FsRepository
from pitrflow.storage.layout import EXPIRING_NAME, verify_key
from tests.unit.sqlserver.conftest import FIXTURES, WEEKLY, sqlserver_instance

NOW = datetime(2024, 6, 22, tzinfo=UTC)
L0 = "20240601T190003Z-L-300"
F1, D1 = "20240602T011000Z-F-301", "20240605T010300Z-D-308"
F2, D2 = "20240609T011000Z-F-317", "20240612T010300Z-D-324"
COPY = "20240613T011000Z-F-327"
F3, D3 = "20240616T011000Z-F-334", "20240619T010300Z-D-341"


def _plan(repo: FsRepository, policy: RetentionConfig, fixture: Path = WEEKLY,
          instance: str = "shop") -> tuple[SqlServerCatalog, SqlServerExpirePlan]:
    import_recorded_rows(fixture, repo, instance)
    catalog = read_sqlserver_catalog(repo, instance)
    return catalog, plan_sqlserver_expire(catalog, policy, NOW)


def _logs(catalog: SqlServerCatalog, first: int, last: int) -> set[str]:
    """Ids of the log backups whose msdb backup_set_id is in [first, last]."""
    return {r.id for r in catalog.records
            if r.kind == "log" and first <= r.backup_set_id <= last}


def _reasons(plan: SqlServerExpirePlan) -> dict[str, str]:
    return {d.backup_id: d.reason for d in plan.decisions}


def test_full_count_keeps_chains_and_cuts_logs_at_the_oldest_kept_full(
        repo: FsRepository) -> None:
    catalog, plan = _plan(repo, RetentionConfig(full_count=2))

    assert set(plan.delete_backups) == {L0, F1, D1} | _logs(catalog, 302, 316)
    assert set(plan.kept_backups) == {F2, D2, COPY, F3, D3} | _logs(catalog, 318, 347)
    reasons = _reasons(plan)
    assert reasons[F3] == "newest full (the newest full chain is always kept)"
    assert reasons[F2] == "within the newest 2 full chains"
    assert reasons[F1] == "older than the newest 2 full chains"
    assert reasons[D2] == f"differential of kept full {F2}"
    assert reasons[D1] == f"differential of expired full {F1}"
    assert reasons[COPY] == f"copy-only full, newer than the oldest kept full {F2}"
    assert reasons["20240609T070003Z-L-318"] == f"log needed from kept full {F2}"
    assert reasons["20240616T070003Z-L-335"] == f"log needed from kept full {F3}"
    assert reasons["20240608T190003Z-L-316"].startswith(f"older than kept full {F2}")

    # The cut is on LSNs: the first kept log holds F2's last LSN, every deleted log
    # ends at or before it.
    f2 = next(r for r in catalog.records if r.id == F2).rows[0]
    first_kept = next(r for r in catalog.records if r.id == "20240609T070003Z-L-318").rows[0]
    assert first_kept.first_lsn <= f2.last_lsn < first_kept.last_lsn
    deleted_logs = [r.rows[0] for r in catalog.records
                    if r.kind == "log" and r.id in plan.delete_backups]
    assert deleted_logs and all(row.last_lsn <= f2.last_lsn for row in deleted_logs)


def test_one_full_chain_drops_the_older_copy_only_full_and_the_old_differential(
        repo: FsRepository) -> None:
    catalog, plan = _plan(repo, RetentionConfig(full_count=1))

    assert set(plan.kept_backups) == {F3, D3} | _logs(catalog, 335, 347)
    reasons = _reasons(plan)
    assert reasons[COPY] == (f"copy-only full older than the oldest kept full {F3} "
                             "(it anchors no chain)")
    assert reasons[D2] == f"differential of expired full {F2}"
    assert "20240615T190003Z-L-333" in plan.delete_backups


@pytest.mark.parametrize(("days", "anchor", "deleted_fulls"), [
    (4, F3, {F1, F2}),       # window opens 18 June: F3 (16 June) is the newest full before
    (10, F2, {F1}),          # opens 12 June: F2 (9 June)
    (13, F1, set()),         # opens 9 June 00:00, before F2 finished at 01:10: F1 is needed
])
def test_window_keeps_the_newest_full_before_it_and_everything_newer(
        repo: FsRepository, days: int, anchor: str, deleted_fulls: set[str]) -> None:
    catalog, plan = _plan(repo, RetentionConfig(window_days=days))

    fulls = {F1, F2, F3}
    assert {d for d in plan.delete_backups if d in fulls} == deleted_fulls
    reasons = _reasons(plan)
    if anchor != F3:  # the newest full says so first
        assert reasons[anchor].startswith(f"newest full finished before the {days}-day window "
                                          "began")
    for full in deleted_fulls:
        assert reasons[full] == f"not needed for the {days}-day window"
    assert all(r.id not in plan.delete_backups for r in catalog.records
               if r.kind == "log" and r.rows[0].last_lsn > next(
                   a for a in catalog.records if a.id == anchor).rows[0].last_lsn)
    # Log 300 ends before F1's last LSN: no kept full ever needs it.
    assert L0 in plan.delete_backups


def test_without_a_policy_nothing_is_expired(repo: FsRepository) -> None:
    _, plan = _plan(repo, RetentionConfig())

    assert plan.empty and plan.delete_backups == []
    assert {d.reason for d in plan.decisions} == {NO_POLICY}


def test_logs_of_an_older_fork_go_with_its_fulls(repo: FsRepository) -> None:
    _, plan = _plan(repo, RetentionConfig(full_count=1), FIXTURES / "two_forks.json", "crm")

    deleted = {d.backup_set_id for d in plan.decisions if not d.keep}
    assert deleted == {9001, 9002, 9003, 9004, 9005}
    spanning = next(d for d in plan.decisions if d.backup_set_id == 9007)
    assert spanning.keep and spanning.reason.startswith("log needed from kept full")
    assert next(d for d in plan.decisions if d.backup_set_id == 9003).reason.startswith(
        "log of recovery fork A1F0C9E2-3B7D-4E65-8C14-9D2B7E6F0A31, which has no kept full")


def test_a_fork_without_a_full_of_its_own_keeps_its_logs(repo: FsRepository) -> None:
    """Just after a restore the new fork has only logs: a restore across the fork needs them."""
    rows = [r for r in rows_from_json(FIXTURES / "two_forks.json") if r.backup_set_id != 9006]
    import_recorded_rows(rows, repo, "crm")

    plan = plan_sqlserver_expire(read_sqlserver_catalog(repo, "crm"),
                                 RetentionConfig(full_count=1), NOW)

    assert plan.delete_backups == []
    reason = next(d for d in plan.decisions if d.backup_set_id == 9008).reason
    assert reason.startswith("recovery fork B7E3D5A9-0C12-4F8B-A6E4-1C9F3D7B2E58 began after "
                             "kept full")


def test_a_log_taken_during_the_full_is_cut_by_lsn_not_by_time(repo: FsRepository) -> None:
    """4002 and 4003 both finished before full 4001 did; only 4003 holds its last LSN."""
    _, plan = _plan(repo, RetentionConfig(full_count=1), FIXTURES / "log_during_full.json",
                    "billing")

    keep = {d.backup_set_id: d.keep for d in plan.decisions}
    assert keep == {4000: False, 4001: True, 4002: False, 4003: True, 4004: True, 4005: True}


def test_plan_text_groups_runs_of_logs(repo: FsRepository) -> None:
    _, plan = _plan(repo, RetentionConfig(full_count=2))

    lines = expire_text(plan).splitlines()
    assert lines[:2] == ["expire plan for shop (SQL Server)", "  database Shop"]
    assert (f"    DELETE full         {F1}: older than the newest 2 full chains") in lines
    assert any(line.startswith("    DELETE 6 log backups 20240602T070003Z-L-302 .. "
                               "20240604T190003Z-L-307: older than kept full") for line in lines)
    assert "  total: delete 17 backup sets (1 full, 1 differential, 15 log), keep 31" in lines


# --- carrying a plan out ---


def _listing(repo: FsRepository) -> list[ObjectInfo]:
    return list(repo.list("shop/"))


def _instance(worker_dir: Path, policy: RetentionConfig):  # type: ignore[no-untyped-def]
    return dataclasses.replace(sqlserver_instance("Shop", worker_dir, name="shop"),
                               retention=policy)


def test_dry_run_deletes_nothing(repo: FsRepository, worker_dir: Path) -> None:
    import_recorded_rows(WEEKLY, repo, "shop")
    before = _listing(repo)

    plan, result = sqlserver_expire(_instance(worker_dir, RetentionConfig(full_count=1)), repo,
                                    dry_run=True, now=NOW)

    assert result is None and len(plan.delete_backups) == 34
    assert _listing(repo) == before


def test_expire_deletes_exactly_the_plan_and_the_window_still_restores(
        repo: FsRepository, worker_dir: Path) -> None:
    import_recorded_rows(WEEKLY, repo, "shop")
    instance = _instance(worker_dir, RetentionConfig(full_count=2))
    for backup_id in (F1, F2):  # verify records of a deleted backup go with it
        repo.put_bytes(verify_key("shop", backup_id), b"{}")

    plan, result = sqlserver_expire(instance, repo, dry_run=False, now=NOW)

    assert result is not None
    assert sorted(result.backups_deleted) == sorted(plan.delete_backups)
    assert result.logs_deleted == 15 and result.bytes_freed > 0
    after = read_sqlserver_catalog(repo, "shop")
    assert sorted(r.id for r in after.records) == sorted(plan.kept_backups)
    assert after.rejected == {} and after.expiring == {}
    keys = [info.key for info in _listing(repo)]
    assert not [k for k in keys if any(d in k for d in plan.delete_backups)]
    assert verify_key("shop", F2) in keys and verify_key("shop", F1) not in keys

    # A point inside the kept window still plans (the dry run a user would run) ...
    text, statements = ops.sqlserver_plan_text(instance, repo,
                                               datetime(2024, 6, 10, 12, tzinfo=UTC), now=NOW)
    assert F2 in text and statements[-1].endswith("WITH RECOVERY")
    assert log_chain(after, "Shop").ok
    # ... and one before it no longer does.
    with pytest.raises(SqlServerPlanError, match="no full backup of Shop finished at or before"):
        ops.sqlserver_plan_text(instance, repo, datetime(2024, 6, 5, 12, tzinfo=UTC), now=NOW)

    again, nothing = sqlserver_expire(instance, repo, dry_run=False, now=NOW)
    assert again.empty and nothing is None


class _Recording(FsRepository):
    """A filesystem repository that notes every write and delete, in order."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: list[tuple[str, str]] = []

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        self.calls.append(("put", key))
        return super().put_bytes(key, data)

    def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        super().delete(key)


def test_marker_first_manifest_next_and_fulls_before_logs(tmp_path: Path,
                                                          worker_dir: Path) -> None:
    repo = _Recording(tmp_path / "rec")
    import_recorded_rows(WEEKLY, repo, "shop")
    repo.calls.clear()

    sqlserver_expire(_instance(worker_dir, RetentionConfig(full_count=2)), repo, dry_run=False,
                     now=NOW)

    prefix = f"shop/backups/{F1}/"
    mine = [c for c in repo.calls if c[1].startswith(prefix) or c[1].endswith(f"/{F1}.json")]
    assert mine == [
        ("put", prefix + EXPIRING_NAME), ("delete", prefix + "manifest.json"),
        ("delete", prefix + "SQLPROD02_Shop_FULL_20240602_010000.bak"),
        ("delete", verify_key("shop", F1)), ("delete", prefix + EXPIRING_NAME)]
    manifests = [key for op, key in repo.calls if op == "delete" and key.endswith("manifest.json")]
    kinds = [key.split("/")[1] for key in manifests]
    assert kinds == sorted(kinds), "every full and differential goes before any log"


def test_an_interrupted_expire_is_hidden_and_finished_by_the_next(
        repo: FsRepository, worker_dir: Path) -> None:
    import_recorded_rows(WEEKLY, repo, "shop")
    # Interrupted after the manifest went (files left), and right after the marker.
    f2 = f"shop/backups/{F2}/"
    repo.put_bytes(f2 + EXPIRING_NAME, b'{"expiring": true}')
    repo.delete(f2 + "manifest.json")
    repo.put_bytes(f"shop/backups/{COPY}/" + EXPIRING_NAME, b'{"expiring": true}')

    catalog = read_sqlserver_catalog(repo, "shop")
    assert {F2, COPY} <= set(catalog.expiring)
    assert catalog.rejected[F2] == EXPIRING_REASON
    assert {F2, COPY}.isdisjoint(r.id for r in catalog.records)
    assert 317 not in {row.backup_set_id for row in catalog.rows("Shop")}

    plan, result = sqlserver_expire(_instance(worker_dir, RetentionConfig(full_count=3)), repo,
                                    dry_run=False, now=NOW)

    assert plan.finish_expiring == sorted([F2, COPY]) and plan.delete_backups == [L0]
    assert _reasons(plan)[D2].startswith("its base full is not in the repository; kept")
    assert result is not None and {F2, COPY} <= set(result.backups_deleted)
    assert list(repo.list(f2)) == [] and list(repo.list(f"shop/backups/{COPY}/")) == []
    assert read_sqlserver_catalog(repo, "shop").rejected == {}
