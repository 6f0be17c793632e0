"""One pitrflow core call in a process of its own, for the benchmark to time and weigh.

    python bench/pitr_child.py backup CONFIG
    python bench/pitr_child.py ship CONFIG
    python bench/pitr_child.py restore CONFIG PGDATA PORT [--delta [--trust-mtime]]

Prints one JSON line: the seconds the core call took (the interpreter's start-up and
imports are left out, as pgBackRest's C start-up is negligible), its phases, and the
process's own peak RSS; the benchmark adds the peak RSS of the whole process tree from
wait4.  Run from the repository root with the project's virtualenv.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def backup(config_path: str) -> dict[str, Any]:
    from pitrflow.config import load_config
    from pitrflow.engines.postgres.backup import bundled
    from pitrflow.engines.postgres.backup.basebackup import take_backup
    from pitrflow.storage import open_repository

    config = load_config(config_path)
    repo = open_repository(config.repository)
    stream = {"seconds": 0.0}
    original = bundled.write_bundles

    def timed_write(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            stream["seconds"] += time.monotonic() - started

    bundled.write_bundles = timed_write  # type: ignore[assignment]
    started = time.monotonic()
    outcome = take_backup(config.instance("main"), repo)
    seconds = time.monotonic() - started
    manifest = outcome.manifest
    return {"seconds": round(seconds, 2), "id": manifest.id, "repo_bytes": manifest.size_bytes,
            "objects": len(manifest.files), "layout": manifest.layout,
            "compression": manifest.compression,
            "phases": {"pg_basebackup stream -> compressed objects": round(stream["seconds"], 2),
                       "checkpoint, catalog, manifests": round(seconds - stream["seconds"], 2)},
            "self_max_rss_mb": _rss_mb()}


def ship(config_path: str) -> dict[str, Any]:
    from pitrflow.config import load_config
    from pitrflow.engines.postgres.wal.walship import ship_wal
    from pitrflow.storage import open_repository

    config = load_config(config_path)
    started = time.monotonic()
    outcome = ship_wal(config.instance("main"), open_repository(config.repository))
    return {"seconds": round(time.monotonic() - started, 2),
            "segments": len(outcome.segments_shipped), "self_max_rss_mb": _rss_mb()}


def restore(config_path: str, pgdata: str, port: int, delta: bool,
            trust_mtime: bool) -> dict[str, Any]:
    from pitrflow.config import load_config
    from pitrflow.engines.postgres.catalog.snapshot import read_catalog
    from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore
    from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
    from pitrflow.storage import open_repository

    config = load_config(config_path)
    repo = open_repository(config.repository)
    started = time.monotonic()
    plan = plan_restore(read_catalog(repo, "main"), RestoreTarget(None))
    request = RestoreRequest(config.instance("main"), Path(pgdata), port,
                             config_file=config.source, delta=delta,
                             delta_trust_mtime=trust_mtime)
    outcome = execute_restore(plan, request, repo)
    seconds = time.monotonic() - started
    phases = {k: round(v, 2) for k, v in outcome.phases.items()}
    phases["other (plan, preflight, config, chown)"] = round(
        seconds - sum(v for k, v in outcome.phases.items() if k != "wal_fetch"), 2)
    return {"seconds": round(seconds, 2), "backup": plan.backup.id,
            "wal_segments": len(plan.wal), "wal_bytes": plan.wal_bytes,
            "restore_command": outcome.restore_command_kind, "phases": phases,
            "delta": outcome.delta,
            "self_max_rss_mb": _rss_mb()}


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    what, config_path = sys.argv[1], sys.argv[2]
    if what == "backup":
        result = backup(config_path)
    elif what == "ship":
        result = ship(config_path)
    elif what == "restore":
        result = restore(config_path, sys.argv[3], int(sys.argv[4]), "--delta" in sys.argv[5:],
                         "--trust-mtime" in sys.argv[5:])
    else:
        raise SystemExit(f"unknown step {what!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
