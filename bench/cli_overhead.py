"""What `pitr` costs over the core call it makes, with no Prefect server configured.

Starts an embedded PostgreSQL 18 with a small database, then for each command
times the core call in this process and the same command as a user runs it
(`python -m pitrflow.cli ...`, a new process each time), median of --rounds.
The difference is the CLI's own cost: interpreter start-up, imports, config.
Target: at most 1 s.  Run by hand:

    .venv/bin/python bench/cli_overhead.py [--rounds 5] [--rows 20000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pitrflow import local
from pitrflow.config import load_config
from pitrflow.devtools.localpg import LocalCluster, default_bin_dir, world_traversable
from pitrflow.engines.base import RestoreDestination, RestoreTarget


def _free_port(start: int) -> int:
    import socket

    for port in range(start, start + 500):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port")


def _median(func: Callable[[int], None], rounds: int) -> float:
    times = []
    for n in range(rounds):
        started = time.monotonic()
        func(n)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pitrflow-cli-bench-", dir="/var/tmp"))
    world_traversable(work)
    cluster = LocalCluster(work / "source", _free_port(57100), default_bin_dir())
    cluster.init()
    cluster.start()
    try:
        with cluster.connect() as conn:
            conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, note text)")
            conn.execute("INSERT INTO t(note) SELECT md5(g::text) FROM generate_series(1, %s) g",
                         (args.rows,))
        config_path = work / "pitrflow.toml"
        config_path.write_text(f'[repository]\npath = "{work / "repo"}"\n\n[instances.main]\n'
                               f'engine = "postgresql"\nhost = "127.0.0.1"\n'
                               f'port = {cluster.port}\nuser = "postgres"\n'
                               f'bin_dir = "{cluster.bin_dir}"\n')
        config = load_config(config_path)
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env["PREFECT_HOME"] = str(work / "prefect-home")

        def cli(*argv: str) -> None:
            subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config", str(config_path),
                            *argv], check=True, capture_output=True, env=env)

        def restore_dir(n: int, kind: str) -> Path:
            path = work / f"restore-{kind}-{n}"
            return path

        def core_restore(n: int) -> None:
            plan = local.plan_restore(config, "main", RestoreTarget(None), RestoreDestination(
                pgdata=str(restore_dir(n, "core")), port=_free_port(57300)))
            result = local.restore(config, plan)
            _stop(cluster, Path(result.data["pgdata"]))

        def cli_restore(n: int) -> None:
            path = restore_dir(n, "cli")
            cli("restore", "main", "--to", "latest", "--pgdata", str(path), "--port",
                str(_free_port(57300)))
            _stop(cluster, path)

        rows = [
            ("backup full", lambda n: local.backup(config, "main", "full"),
             lambda n: cli("backup", "full", "main")),
            ("ship", lambda n: local.ship(config, "main"), lambda n: cli("ship", "main")),
            ("restore --to latest", core_restore, cli_restore),
            ("info", lambda n: local.engine_for(config, "main").info(
                local.open_repository(config.repository)), lambda n: cli("info", "main")),
        ]
        print(f"{'command':<22} {'core call':>10} {'pitr CLI':>10} {'overhead':>10}")
        for name, core, command in rows:
            core_s = _median(core, args.rounds)
            cli_s = _median(command, args.rounds)
            print(f"{name:<22} {core_s:>9.2f}s {cli_s:>9.2f}s {cli_s - core_s:>9.2f}s",
                  flush=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import pitrflow.cli.commands"], check=True,
                       env=env)
        print(f"interpreter + CLI imports alone: {time.monotonic() - started:.2f}s")
    finally:
        for pid_file in work.glob("*/postmaster.pid"):
            _stop(cluster, pid_file.parent)
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _stop(cluster: LocalCluster, pgdata: Path) -> None:
    if (pgdata / "postmaster.pid").exists():
        subprocess.run([*(["runuser", "-u", cluster.user, "--"] if cluster.user else []),
                        cluster.tool("pg_ctl"), "stop", "-D", str(pgdata), "-m", "immediate"],
                       check=False, capture_output=True)
    shutil.rmtree(pgdata, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
