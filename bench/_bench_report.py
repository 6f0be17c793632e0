"""The backup/restore benchmark's ratios against the targets of issue 14, and its report
(helpers of pg_backup_restore.py)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import interference_lines, ratio

TARGETS = {"backup_time": 0.7, "size": 1.05, "restore_time": 0.8, "restore_scaling": 1.6,
           "delta": 0.3, "s3": 1.3}


def report(results: dict[str, Any]) -> str:
    mb = 1e6
    b, r, d = results["backups"], results["restores"], results["delta"]
    db = results["database"]
    lines = [
        "",
        f"pitrflow vs pgBackRest on PostgreSQL 15 -- database {db['database_bytes'] / 1e9:.2f} GB "
        f"(pgbench scale {db['pgbench_scale']} + {db['row_counts']['bench_docs']:,} mixed rows)",
        "",
        f"{'operation':<48}{'time s':>8}{'size MB':>10}{'RSS MB':>8}",
        "-" * 74,
    ]

    def row(name: str, item: dict[str, Any] | None, size_key: str | None = "repo_bytes") -> None:
        if item is None:
            return
        t = f"{item['seconds']:8.1f}"
        size = item.get(size_key) if size_key else None
        s = f"{size / mb:10.1f}" if size is not None else f"{'-':>10}"
        rss = item.get("tree_max_rss_mb")
        lines.append(f"{name:<48}{t}{s}{(f'{rss:8.0f}' if rss else f'{chr(45):>8}')}")

    row("backup  pg_basebackup server-zstd:3,workers=2", b["pg_basebackup"])
    row("backup  pitr core, process_max 1", b["pitr_pm1"])
    row("backup  pitr core, process_max 2", b["pitr_pm2"])
    row("backup  pitr core, process_max 2, moto S3", b["pitr_s3"])
    row("backup  pitr backup full (CLI, Prefect flow)", b["pitr_cli"])
    for pm in (1, 2):
        pb = b[f"pgbackrest_pm{pm}"]
        row(f"backup  pgbackrest --type=full, process-max {pm}", pb)
        lines.append(f"{'          + archived WAL it needs':<48}{'-':>8}"
                     f"{(pb['repo_bytes'] + pb['wal_bytes']) / mb:10.1f}")
    for kind, name in (("pitr_pm1", "pitr core, process_max 1"),
                       ("pitr_pm2", "pitr core, process_max 2"),
                       ("pitr_s3", "pitr core, process_max 2, moto S3"),
                       ("pitr_cli", "pitr restore --to latest (CLI)"),
                       ("pgbackrest_pm1", "pgbackrest, process-max 1 (+ start)"),
                       ("pgbackrest_pm2", "pgbackrest, process-max 2 (+ start)")):
        row(f"restore {name}", r[kind], None)
    row("restore pitr delta (after ~5% of rows changed)", d["delta"], None)
    row("restore pitr full, same backup", d["full"], None)
    row("restore pitr delta trusting mtimes (another 5%)", d["delta_mtime"], None)
    lines += ["", f"{'ratio':<52}{'value':>9}{'target':>10}{'':>6}", "-" * 77]
    for key, name, target, higher in results["ratio_rows"]:
        value = results["ratios"][key]
        shown = f"{value:9.2f}" if value is not None else f"{'-':>9}"
        bound = (">= " if higher else "<= ") + format(target, ".2f")
        ok = "-" if value is None else (
            "ok" if (value >= target if higher else value <= target) else "MISS")
        lines.append(f"{name:<52}{shown}{bound:>10}{ok:>6}")
    lines += ["", "where pitr's time goes (seconds)"]
    for key in ("pitr_pm1", "pitr_pm2", "pitr_s3"):
        lines.append(f"  backup {key}: " + ", ".join(
            f"{k} {v:.1f}" for k, v in b[key]["phases"].items()) + f"; {b[key]['compression']}, "
            f"{b[key]['objects']} objects")
    lines.append(f"  backup (CLI): Prefect flow overhead "
                 f"{b['pitr_cli']['seconds'] - b['pitr_pm2']['seconds']:.1f} over the core call")
    for key in ("pitr_pm1", "pitr_pm2", "pitr_s3", "pitr_cli"):
        lines.append(f"  restore {key}: " + ", ".join(
            f"{k} {v:.1f}" for k, v in r[key]["phases"].items()))
    for key in ("delta", "delta_mtime"):
        lines.append(f"  restore {key}: " + ", ".join(
            f"{k} {v:.1f}" for k, v in d[key]["phases"].items()) + f"; {d[key]['delta']}")
    diag = results["diagnostics"]
    lines.append(f"  floor: decompressing every object of the backup on one thread: "
                 f"{diag['decompress_seconds']:.1f} s")
    if "write_sync_seconds" in diag:
        lines.append(f"  floor: writing the cluster's size to this disk and syncing it: "
                     f"{diag['write_sync_seconds']:.1f} s")
    for step, cpu in diag.get("moto_cpu_seconds", {}).items():
        lines.append(f"  moto's S3 server (on the same cores) during {step}: {cpu:.1f} s of CPU")
    for pm in (1, 2):
        pr = r[f"pgbackrest_pm{pm}"]
        lines.append(f"  pgBackRest process-max {pm}: restore command "
                     f"{pr['restore_seconds']:.1f}, start + promotion {pr['start_seconds']:.1f}")
    lines += interference_lines(results.get("interference", {}))
    return "\n".join(lines)


def summarize(database: dict[str, Any], versions: dict[str, str], scale_gb: float,
              backups: dict[str, Any], restores: dict[str, Any], delta: dict[str, Any],
              diagnostics: dict[str, Any], work: Path) -> dict[str, Any]:
    def pgbr_size(pm: int) -> int:
        pb = backups[f"pgbackrest_pm{pm}"]
        return int(pb["repo_bytes"] + pb["wal_bytes"])

    b, r = backups, restores
    ratio_rows = [
        ("restore_pm1", "restore time, 1 worker (pitr / pgBackRest)", TARGETS["restore_time"],
         False),
        ("restore_pm2", "restore time, 2 workers (pitr / pgBackRest)", TARGETS["restore_time"],
         False),
        ("restore_scaling", "restore speed-up, 2 workers over 1 (pitr)",
         TARGETS["restore_scaling"], True),
        ("backup_pm1", "backup time, 1 worker (pitr / pgBackRest)", TARGETS["backup_time"],
         False),
        ("backup_pm2", "backup time, 2 workers (pitr / pgBackRest)", TARGETS["backup_time"],
         False),
        ("size", "size (pitr / pgBackRest backup + its WAL)", TARGETS["size"], False),
        ("size_backup_only", "size (pitr / pgBackRest backup alone)", TARGETS["size"], False),
        ("delta", "delta restore / full restore (pitr)", TARGETS["delta"], False),
        ("delta_mtime", "delta restore trusting mtimes / full restore", TARGETS["delta"], False),
        ("s3_backup", "backup time, S3 / filesystem (pitr)", TARGETS["s3"], False),
        ("s3_restore", "restore time, S3 / filesystem (pitr)", TARGETS["s3"], False),
    ]
    ratios = {
        "restore_pm1": ratio(r["pitr_pm1"]["seconds"], r["pgbackrest_pm1"]["seconds"]),
        "restore_pm2": ratio(r["pitr_pm2"]["seconds"], r["pgbackrest_pm2"]["seconds"]),
        "restore_scaling": ratio(r["pitr_pm1"]["seconds"], r["pitr_pm2"]["seconds"]),
        "backup_pm1": ratio(b["pitr_pm1"]["seconds"], b["pgbackrest_pm1"]["seconds"]),
        "backup_pm2": ratio(b["pitr_pm2"]["seconds"], b["pgbackrest_pm2"]["seconds"]),
        "size": ratio(b["pitr_pm2"]["repo_bytes"], pgbr_size(2)),
        "size_backup_only": ratio(b["pitr_pm2"]["repo_bytes"], b["pgbackrest_pm2"]["repo_bytes"]),
        "delta": ratio(delta["delta"]["seconds"], delta["full"]["seconds"]),
        "delta_mtime": ratio(delta["delta_mtime"]["seconds"], delta["full"]["seconds"]),
        "s3_backup": ratio(b["pitr_s3"]["seconds"], b["pitr_pm2"]["seconds"]),
        "s3_restore": ratio(r["pitr_s3"]["seconds"], r["pitr_pm2"]["seconds"]),
    }
    peak = max(item.get("tree_max_rss_mb", 0) for item in
               [*b.values(), *r.values(), delta["delta"], delta["full"], delta["delta_mtime"]])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "work_dir": str(work)},
        "versions": versions,
        "scale_gb": scale_gb,
        "database": database,
        "backups": backups,
        "restores": restores,
        "delta": delta,
        "peak_rss_mb": peak,
        "diagnostics": diagnostics,
        "targets": TARGETS,
        "ratio_rows": ratio_rows,
        "ratios": {k: (round(v, 3) if v is not None else None) for k, v in ratios.items()},
        "met": {key: ratios[key] is not None and (ratios[key] >= target if higher
                                                  else ratios[key] <= target)
                for key, _name, target, higher in ratio_rows},
    }
