"""Pure, version-aware command-line builders for PostgreSQL's programs.

Flags that pitrflow relies on (format, WAL method, slot, end position) are
placed by these builders and cannot be overridden by callers.
"""

from __future__ import annotations

from pathlib import Path

from pitrflow.engines.postgres.binaries import PgBinaries
from pitrflow.engines.postgres.wal.walnames import format_lsn


def compress_option(mode: str, level: int, workers: int, server_major: int) -> list[str]:
    """pg_basebackup --compress for the configured mode.

    Server-side zstd (PostgreSQL 15+) lets the database host compress with
    several threads while the stream is still in flight; older servers get
    client-side zstd.
    """
    if mode == "none":
        return []
    if mode == "server" and server_major >= 15:
        spec = f"server-zstd:level={level}"
        if workers > 1:
            spec += f",workers={workers}"
        return [f"--compress={spec}"]
    return [f"--compress=client-zstd:level={level}"]


def basebackup_argv(
    bins: PgBinaries,
    conn_args: list[str],
    target_dir: Path | None,
    *,
    label: str,
    compress: list[str],
    incremental_manifest: Path | None = None,
    max_rate: str = "",
    manifest_checksums: str | None = None,
) -> list[str]:
    """pg_basebackup into a directory, or as one tar on stdout when target_dir is None.

    WAL needed to reach consistency travels inside the backup either way, so
    every backup restores on its own even if WAL shipping lagged: streamed
    beside it into a directory, fetched into the tar on stdout (where the
    owned slot keeps it on the server until fetched).
    """
    argv = [
        bins.tool("pg_basebackup"), *conn_args,
        "-D", str(target_dir) if target_dir is not None else "-",
        "--format=tar",
        "--wal-method=stream" if target_dir is not None else "--wal-method=fetch",
        "--checkpoint=fast",
        "--label", label,
        "--verbose",
        *compress,
    ]
    if incremental_manifest is not None:
        argv += ["--incremental", str(incremental_manifest)]
    if max_rate:
        argv += ["--max-rate", max_rate]
    if manifest_checksums:
        argv.append(f"--manifest-checksums={manifest_checksums}")
    return argv


def receivewal_argv(bins: PgBinaries, conn_args: list[str], target_dir: Path, *, slot: str,
                    end_lsn: int) -> list[str]:
    return [
        bins.tool("pg_receivewal"), *conn_args,
        "-D", str(target_dir),
        "--slot", slot,
        "--endpos", format_lsn(end_lsn),
        "--no-loop",
        "--verbose",
    ]


def receivewal_follow_argv(bins: PgBinaries, conn_args: list[str], target_dir: Path, *,
                           slot: str, synchronous: bool) -> list[str]:
    """pg_receivewal for follow mode: no end position; the follower reconnects itself.

    A status report every second keeps the write position the server shows
    (pg_stat_replication), which bounds what a partial upload holds, fresh.
    --synchronous flushes and reports after every write, so the receiver can
    be a synchronous standby.
    """
    argv = [
        bins.tool("pg_receivewal"), *conn_args,
        "-D", str(target_dir),
        "--slot", slot,
        "--no-loop",
        "--status-interval=1",
        "--verbose",
    ]
    if synchronous:
        argv.append("--synchronous")
    return argv


def verifybackup_argv(bins: PgBinaries, data_dir: Path, manifest: Path | None = None) -> list[str]:
    argv = [bins.tool("pg_verifybackup"), "--no-parse-wal", "--quiet"]
    if manifest is not None:
        argv += ["--manifest-path", str(manifest)]
    return [*argv, str(data_dir)]


def combinebackup_argv(bins: PgBinaries, backups: list[Path], output: Path,
                       copy_mode: str | None) -> list[str]:
    # No fsync here: recovery from a backup syncs the whole data directory
    # at start-up anyway (recovery_init_sync_method), so syncing twice only costs.
    argv = [bins.tool("pg_combinebackup"), "--no-sync", "-o", str(output)]
    if copy_mode:
        argv.append(f"--{copy_mode}")
    return [*argv, *map(str, backups)]


def pg_ctl_start_argv(bins: PgBinaries, data_dir: Path, log_file: Path) -> list[str]:
    return [bins.tool("pg_ctl"), "start", "-D", str(data_dir), "-l", str(log_file),
            "-w", "-t", "3600"]


def pg_ctl_stop_argv(bins: PgBinaries, data_dir: Path, mode: str = "fast") -> list[str]:
    return [bins.tool("pg_ctl"), "stop", "-D", str(data_dir), "-m", mode, "-w"]
