"""The stores the backup/restore benchmark compares: pgBackRest's repository and moto's S3,
and the checks it makes of what each restored (helpers of pg_backup_restore.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import (
    BenchError,
    as_server_user,
    chown_to_server_user,
    free_port,
    row_counts,
    run,
    tree_bytes,
)

STANZA = "bench"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "pitrflow-bench"


def pgbackrest_conf(work: Path, data_dir: Path, port: int) -> Path:
    for name in ("pgbr-repo", "pgbr-log", "pgbr-lock", "pgbr-spool"):
        (work / name).mkdir(exist_ok=True)
        chown_to_server_user(work / name)
    conf = work / "pgbackrest.conf"
    conf.write_text(f"""[global]
repo1-path={work / 'pgbr-repo'}
repo1-retention-full=10
log-path={work / 'pgbr-log'}
lock-path={work / 'pgbr-lock'}
spool-path={work / 'pgbr-spool'}
compress-type=zst
compress-level=3
process-max=2
start-fast=y
log-level-console=warn
log-level-file=detail

[{STANZA}]
pg1-path={data_dir}
pg1-port={port}
pg1-socket-path={data_dir}
pg1-user=postgres
""")
    conf.chmod(0o644)
    return conf


def pgbackrest(conf: Path, *args: str, what: str) -> subprocess.CompletedProcess[str]:
    return run(as_server_user(["pgbackrest", f"--config={conf}", f"--stanza={STANZA}", *args]),
               what=what, cwd=conf.parent)


def pgbackrest_backup_sizes(conf: Path, work: Path) -> dict[str, Any]:
    info = json.loads(pgbackrest(conf, "--output=json", "info", what="pgbackrest info").stdout)
    backup = info[0]["backup"][-1]
    start, stop = backup["archive"]["start"], backup["archive"]["stop"]
    wal_bytes, wal_files = 0, 0
    for path in (work / "pgbr-repo" / "archive" / STANZA).rglob("*"):
        name = path.name
        if path.is_file() and len(name) > 24 and start <= name[:24] <= stop:
            wal_bytes += path.stat().st_size
            wal_files += 1
    backup_dir = work / "pgbr-repo" / "backup" / STANZA / backup["label"]
    return {"label": backup["label"], "repo_bytes": int(backup["info"]["repository"]["size"]),
            "dir_bytes": tree_bytes(backup_dir), "wal_bytes": wal_bytes, "wal_files": wal_files,
            "wal_range": [start, stop], "database_bytes": int(backup["info"]["size"])}


def decompress_floor(backup_dir: Path) -> float:
    """Seconds to only decompress every data object of a v2 backup, one thread, to nowhere."""
    import zstandard

    started = time.monotonic()
    for path in sorted(backup_dir.glob("*.tar.zst")):
        with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(
                fh, read_across_frames=True) as reader:
            while reader.read(1 << 22):
                pass
    return time.monotonic() - started


def write_floor(directory: Path, size: int) -> float:
    """Seconds to write `size` bytes to a file in `directory` and sync them: what any
    restore of that size pays on this disk, whatever its decompression and workers."""
    chunk = os.urandom(4 << 20)
    path = directory / "write-floor.bin"
    started = time.monotonic()
    with open(path, "wb", buffering=0) as fh:
        for _ in range(max(1, size // len(chunk))):
            fh.write(chunk)
        os.fsync(fh.fileno())
    seconds = time.monotonic() - started
    path.unlink()
    return seconds


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_moto(work: Path, ports: set[int]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port(55600, ports)
    with open(work / "moto.log", "ab") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",  # noqa: S603
                                 "-p", str(port)], stdout=sink, stderr=sink,
                                env={**os.environ, **AWS_ENV})
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise BenchError(f"moto's server did not start; see {work / 'moto.log'}")
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"]).create_bucket(
                     Bucket=BUCKET)
    return proc, endpoint


def content_check(port: int) -> dict[str, int]:
    """Row counts and a sum that every changed row moves: a delta restore must match it."""
    import psycopg

    counts = row_counts(port)
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        row = conn.execute("SELECT sum(abalance), (SELECT sum(length(note)) FROM bench_docs) "
                           "FROM pgbench_accounts").fetchone()
    assert row is not None
    return {**counts, "sum_abalance": int(row[0]), "sum_note_length": int(row[1])}
