"""The encryption case of the backup/restore benchmark: the same database, backed up and
restored by pitrflow's core calls into an unencrypted and an encrypted repository.

Three repositories, one per way of storing:
- ``plain``: compress = "server" on a filesystem repository (layout v1: pg_basebackup
  compresses, the files are renamed in);
- ``plain-streamed``: compress = "client", layout v2 (bundles of frames compressed by
  the worker), the default and the path every object store takes;
- ``encrypted``: the same as ``plain-streamed`` with [repository.encryption] and a
  passphrase.  Compare it with ``plain-streamed`` for the cost of encryption itself.

Backups and restores (to latest, a promoted server, rows checked) run ``rounds`` times
each, every round in a different order, and the median is reported.  The passphrase is
random per run and never printed.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import BenchError, row_counts, say

PASSPHRASE_ENV = "PITR_BENCH_PASSPHRASE"
KINDS = ("plain", "plain-streamed", "encrypted")
TARGET = 1.10  # encryption adds at most 10 % to backup and to restore time


def _config(work: Path, kind: str, port: int, bin_dir: Path) -> Path:
    compress = "server" if kind == "plain" else "client"
    encryption = (f'\n[repository.encryption]\npassphrase_env = "{PASSPHRASE_ENV}"\n'
                  if kind == "encrypted" else "")
    path = work / f"pitrflow-{kind}.toml"
    path.write_text(f"""[repository]
path = "{work / f'repo-{kind}'}"

[instances.main]
engine = "postgresql"
host = "127.0.0.1"
port = {port}
user = "postgres"
database = "postgres"
bin_dir = "{bin_dir}"
slot = "bench_{kind.replace('-', '_')}"
compress = "{compress}"
compress_level = 3
compress_workers = 2
{encryption}""")
    path.chmod(0o644)
    return path


def encryption_case(work: Path, port: int, bin_dir: Path, source_counts: dict[str, int],
                    timed: Callable[[str, Callable[[], Any]], tuple[float, Any]],
                    free_port: Callable[[], int], stop: Callable[[Path], None],
                    rounds: int = 3) -> dict[str, Any]:
    from pitrflow.config import load_config
    from pitrflow.engines.postgres.backup.basebackup import take_backup
    from pitrflow.engines.postgres.catalog.snapshot import read_catalog
    from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore
    from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
    from pitrflow.engines.postgres.wal.walship import ship_wal
    from pitrflow.storage import open_repository

    os.environ[PASSPHRASE_ENV] = secrets.token_urlsafe(24)
    configs = {kind: load_config(_config(work, kind, port, bin_dir)) for kind in KINDS}
    backups: dict[str, list[tuple[float, int]]] = {kind: [] for kind in KINDS}
    restores: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for round_no in range(rounds):
        for kind in KINDS[round_no % 3:] + KINDS[:round_no % 3]:
            config = configs[kind]
            seconds, outcome = timed(f"backup {kind}", lambda c=config: take_backup(
                c.instance("main"), open_repository(c.repository)))
            backups[kind].append((seconds, outcome.manifest.size_bytes))
            say(f"encryption case: {kind} backup, round {round_no + 1}/{rounds}: "
                f"{seconds:.1f} s, {outcome.manifest.size_bytes / 1e6:.1f} MB")
    for config in configs.values():
        ship_wal(config.instance("main"), open_repository(config.repository))
    for round_no in range(rounds):
        for kind in KINDS[round_no % 3:] + KINDS[:round_no % 3]:
            config = configs[kind]
            pgdata = work / f"restore-{kind}"
            rport = free_port()

            def restore(c: Any = config, p: Path = pgdata, r: int = rport) -> Any:
                repo = open_repository(c.repository)
                plan = plan_restore(read_catalog(repo, "main"), RestoreTarget(None))
                return execute_restore(plan, RestoreRequest(c.instance("main"), p, r), repo)

            try:
                seconds, _ = timed(f"restore {kind}", restore)
                if row_counts(rport) != source_counts:
                    raise BenchError(f"the {kind} restore's row counts differ from the source")
            finally:
                stop(pgdata)
                shutil.rmtree(pgdata, ignore_errors=True)
            restores[kind].append(seconds)
            say(f"encryption case: {kind} restore, round {round_no + 1}/{rounds}: "
                f"{seconds:.1f} s")
    del os.environ[PASSPHRASE_ENV]

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    result: dict[str, Any] = {"rounds": rounds, "target": TARGET, "kinds": {}}
    for kind in KINDS:
        result["kinds"][kind] = {
            "backup_seconds": round(median([s for s, _ in backups[kind]]), 2),
            "backup_all": [round(s, 2) for s, _ in backups[kind]],
            "stored_bytes": backups[kind][-1][1],
            "restore_seconds": round(median(restores[kind]), 2),
            "restore_all": [round(s, 2) for s in restores[kind]],
        }
    k = result["kinds"]
    result["ratios"] = {
        "backup_vs_streamed": round(k["encrypted"]["backup_seconds"]
                                    / k["plain-streamed"]["backup_seconds"], 3),
        "restore_vs_streamed": round(k["encrypted"]["restore_seconds"]
                                     / k["plain-streamed"]["restore_seconds"], 3),
        "backup_vs_default": round(k["encrypted"]["backup_seconds"]
                                   / k["plain"]["backup_seconds"], 3),
        "restore_vs_default": round(k["encrypted"]["restore_seconds"]
                                    / k["plain"]["restore_seconds"], 3),
        "size_vs_streamed": round(k["encrypted"]["stored_bytes"]
                                  / k["plain-streamed"]["stored_bytes"], 4),
    }
    return result


def encryption_lines(result: dict[str, Any]) -> list[str]:
    k, r = result["kinds"], result["ratios"]
    lines = ["", f"encryption (AES-256-GCM, 64 KiB chunks): median of {result['rounds']} rounds",
             f"{'repository':<40}{'backup s':>10}{'restore s':>11}{'stored MB':>11}", "-" * 72]
    for kind in KINDS:
        lines.append(f"{kind:<40}{k[kind]['backup_seconds']:>10.1f}"
                     f"{k[kind]['restore_seconds']:>11.1f}{k[kind]['stored_bytes'] / 1e6:>11.1f}")
    target = result["target"]
    for key, name in (("backup_vs_streamed", "backup, encrypted / plain-streamed"),
                      ("restore_vs_streamed", "restore, encrypted / plain-streamed")):
        verdict = "met" if r[key] <= target else "NOT met"
        lines.append(f"  {name:<44}{r[key]:>7.2f}  (target <= {target:.2f}: {verdict})")
    lines.append(f"  {'backup, encrypted / plain (server zstd)':<44}{r['backup_vs_default']:>7.2f}"
                 "  (the path change on a filesystem repository)")
    lines.append(f"  {'restore, encrypted / plain (server zstd)':<44}"
                 f"{r['restore_vs_default']:>7.2f}")
    lines.append(f"  {'stored size, encrypted / plain-streamed':<44}{r['size_vs_streamed']:>7.4f}")
    return lines
