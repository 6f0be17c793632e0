"""Carry out a restore plan: checks first, then fetch, configure, start, wait.

Every refusal happens before the first write.  Once writing starts, the data
directory is ours (it was empty or absent), so a failure in fetching or
checksum verification removes what we wrote; a failure during recovery
leaves the directory and the server log for inspection.  A delta restore
writes into an existing data directory of the same cluster instead: a
failure leaves it unstartable (no control file, a marker) and a rerun
finishes it (restore/delta.py).  WAL is prefetched beside the base files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pitrflow import procs
from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres import commands
from pitrflow.engines.postgres.binaries import PgBinaries, find_binaries, reachable_for
from pitrflow.engines.postgres.catalog.cluster import Database
from pitrflow.engines.postgres.drill.access import DRILL_HBA
from pitrflow.engines.postgres.restore.combine import combine_chain
from pitrflow.engines.postgres.restore.delta import check_delta_target, finish_delta, start_delta
from pitrflow.engines.postgres.restore.fetch import (
    check_restorable_layout,
    prefetch_wal,
    verify_backup_objects,
)
from pitrflow.engines.postgres.restore.placement import (
    TablespacePlacement,
    decide_placement,
    drop_tablespace_map,
    make_tablespace_dirs,
    new_targets,
    wipe_tablespaces,
)
from pitrflow.engines.postgres.restore.planner import RestorePlan
from pitrflow.engines.postgres.restore.recovery import (
    RecoverySettings,
    wait_for_promotion,
    wait_for_standby,
    write_recovery_config,
)
from pitrflow.engines.postgres.restore.unpack import unpack_backup
from pitrflow.engines.postgres.sysuser import (
    check_reachable,
    chown_tree,
    ensure_system_user,
    needs_run_as,
)
from pitrflow.errors import PitrError, RestoreRefusedError
from pitrflow.storage.base import Repository

log = logging.getLogger("pitrflow.restore")

SPOOL_DIR = "pitrflow_wal_spool"


@dataclass(frozen=True)
class RestoreRequest:
    instance: InstanceConfig
    pgdata: Path
    port: int | None = None
    listen_addresses: str = "localhost"
    config_file: Path | None = None
    recovery_timeout: float = 6 * 3600
    # A scratch instance for checks (the drill): its private socket is trusted.
    scratch: bool = False
    # Into an existing data directory of the same cluster, rewriting only what differs;
    # trust_mtime keeps files whose size and mtime match without reading them.
    delta: bool = False
    delta_trust_mtime: bool = False
    # A standby: standby.signal, WAL from the repository and streamed from the primary
    # (primary_conninfo; None: the instance's own connection; "off": the repository
    # only), never promoted.
    standby: bool = False
    primary_conninfo: str | None = None
    # User tablespaces: (NAME_OR_OID, DIR) pairs, else DIR/<name> under tablespace_map_all,
    # else their recorded locations.
    tablespace_map: tuple[tuple[str, str], ...] = ()
    tablespace_map_all: str | None = None
    # Only these databases (and the system ones); the others come back zero-filled.
    db_include: tuple[str, ...] = ()


@dataclass
class RestoreOutcome:
    plan: RestorePlan
    pgdata: Path
    port: int
    socket_dir: Path
    run_as: str | None
    phases: dict[str, float] = field(default_factory=dict)
    last_transaction: str | None = None
    stop_reason: str | None = None
    restore_command_kind: str = ""
    superuser: str | None = None
    # A delta restore's counts: files kept, fetched whole, patched, paths removed, bytes.
    delta: dict[str, int] | None = None
    tablespaces: tuple[TablespacePlacement, ...] = ()
    # Left out by --db-include: zero-filled, to be dropped.
    excluded: tuple[Database, ...] = ()
    # The pg_ctl that started the server: the embedded wheel's is on no PATH.
    pg_ctl: str = "pg_ctl"

    @property
    def connect_hint(self) -> str:
        user = f" user={self.superuser}" if self.superuser else ""
        return f'psql "host={self.socket_dir} port={self.port} dbname=postgres{user}"'

    @property
    def stop_hint(self) -> str:
        prefix = f"runuser -u {self.run_as} -- " if self.run_as else ""
        return f"{prefix}{self.pg_ctl} -D {self.pgdata} stop"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


PORT_RANGE = (54320, 54820)


def pick_port() -> int:
    """A free port of PORT_RANGE, searched from an offset of this process's own: two
    restores or drills starting at once on one host (two instances' drills at 02:30)
    would otherwise both find the first port free and one server fail to bind it."""
    low, high = PORT_RANGE
    offset = (os.getpid() % 50) * 10
    for n in range(high - low):
        port = low + (offset + n) % (high - low)
        if port_is_free(port):
            return port
    raise RestoreRefusedError(f"no free TCP port found in {low}..{high - 1}", "pass --port")


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


@dataclass(frozen=True)
class Preflight:
    port: int
    bins: PgBinaries
    run_as: str | None
    free_bytes: int
    tablespaces: tuple[TablespacePlacement, ...] = ()
    excluded: tuple[Database, ...] = ()


def preflight(plan: RestorePlan, request: RestoreRequest) -> Preflight:
    """Every check that can refuse a restore, without changing anything."""
    pgdata = request.pgdata
    tablespaces, excluded = decide_placement(
        plan.backup, pgdata, request.tablespace_map, request.tablespace_map_all,
        request.db_include, delta=request.delta, standby=request.standby)
    if request.delta:
        check_delta_target(plan.chain, pgdata)
    elif pgdata.exists():
        if not pgdata.is_dir():
            raise RestoreRefusedError(f"target {pgdata} exists and is not a directory",
                                      "pass --pgdata with a new or empty directory")
        if any(pgdata.iterdir()):
            raise RestoreRefusedError(
                f"target directory {pgdata} is not empty",
                "restores never write into a non-empty directory: pass a new or empty one",
            )
    for backup in plan.chain:
        check_restorable_layout(backup)
    free = shutil.disk_usage(_existing_ancestor(pgdata)).free
    # A delta restore reuses what is there: how much it will write is known only later.
    if free < plan.disk_bytes_needed and not request.delta:
        raise RestoreRefusedError(
            f"{_existing_ancestor(pgdata)} has {free / 1e9:.1f} GB free, the restore needs "
            f"{plan.disk_bytes_needed / 1e9:.1f} GB",
            "free space or restore to another file system",
        )
    port = request.port if request.port is not None else pick_port()
    if not port_is_free(port):
        raise RestoreRefusedError(f"port {port} is already in use",
                                  "pass a free --port for the restored instance")
    major = plan.backup.server_version // 10000
    needs = ("pg_ctl", "postgres") + (("pg_combinebackup", "pg_verifybackup")
                                      if len(plan.chain) > 1 else ())
    run_as = request.instance.run_as if needs_run_as() else None
    if run_as is not None:
        ensure_system_user(run_as)
    bins = reachable_for(find_binaries(major, request.instance.bin_dir, exact=True, needs=needs),
                         run_as)
    return Preflight(port, bins, run_as, free, tablespaces, excluded)


def _socket_dir(pgdata: Path, port: int) -> Path:
    # Unix socket paths are limited to ~107 bytes.
    if len(str(pgdata)) + len(f"/.s.PGSQL.{port}") < 100:
        return pgdata
    return Path(f"/tmp/pitrflow-{port}")


def _restore_command(request: RestoreRequest, plan: RestorePlan, spool: Path,
                     run_as: str | None) -> tuple[str, str]:
    """The restore_command, and which kind was chosen (and why)."""
    # A standby goes on reading WAL the ship runs store after the plan was made.
    last = "" if request.standby else plan.last_segment or ""
    plain = f"ln -f '{spool}/%f' '%p' 2>/dev/null || cp '{spool}/%f' '%p'"
    if request.config_file is None:
        return plain, "spool copy (no configuration file to hand to pitr wal-fetch)"
    args = [sys.executable, "-m", "pitrflow.cli", "--config", str(request.config_file),
            "wal-fetch", "--spool", str(spool)]
    if last:
        args += ["--last", last]
    command = " ".join(f"'{a}'" for a in args) + f" '{request.instance.name}' %f %p"
    if run_as is not None and not _user_can_run_pitr(run_as, request.config_file):
        return plain, (f"spool copy: user {run_as} cannot run {sys.executable} or read "
                       f"{request.config_file}; every planned segment is prefetched")
    return command, "pitr wal-fetch"


def _user_can_run_pitr(user: str, config_file: Path) -> bool:
    try:
        probe = procs.run([sys.executable, "-c", "import pitrflow.cli"], user=user,
                          check=False, what="probe", env={"PYTHONDONTWRITEBYTECODE": "1"})
        readable = procs.run(["test", "-r", str(config_file)], user=user, check=False,
                             what="probe")
    except OSError:
        return False
    return probe.returncode == 0 and readable.returncode == 0


def execute_restore(plan: RestorePlan, request: RestoreRequest, repo: Repository) -> RestoreOutcome:
    checks = preflight(plan, request)
    pgdata = request.pgdata
    phases: dict[str, float] = {}
    if len(plan.chain) > 1:
        # A damaged link must be refused before anything is written.
        started = time.monotonic()
        for backup in plan.chain:
            try:
                verify_backup_objects(repo, backup)
            except PitrError as exc:
                raise RestoreRefusedError(
                    f"backup {backup.id} in the chain is damaged: {exc.message}",
                    "restore to a target before it, or take a new full backup") from None
        phases["verify_chain"] = time.monotonic() - started
    run_as = checks.run_as
    if run_as is not None:
        ensure_system_user(run_as)
    created = not pgdata.exists()
    created_tablespaces = new_targets(checks.tablespaces)
    pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(pgdata, 0o700)
    if run_as is not None:
        chown_tree(pgdata, run_as)
    try:
        check_reachable(pgdata, run_as)
        make_tablespace_dirs(checks.tablespaces, run_as)
        for placed in checks.tablespaces:
            check_reachable(placed.target, run_as)
        delta = _fill(plan, request, repo, checks, phases)
        drop_tablespace_map(pgdata)
    except BaseException as exc:
        if request.delta:
            # The marker and the missing control file keep it from starting; a rerun finishes.
            if isinstance(exc, PitrError):
                exc.hint = ((exc.hint + "; ") if exc.hint else "") + (
                    f"then run the same delta restore again: {pgdata} cannot start until one "
                    "completes")
            raise
        # Nothing of the source's data may be half-left in a directory we filled.
        _wipe(pgdata, remove_dir=created)
        wipe_tablespaces(checks.tablespaces, created_tablespaces)
        raise
    spool = pgdata / SPOOL_DIR
    socket_dir = _socket_dir(pgdata, checks.port)
    if socket_dir != pgdata:
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        if run_as is not None:
            chown_tree(socket_dir, run_as)
    restore_command, kind = _restore_command(request, plan, spool, run_as)
    log.info("restore_command: %s", kind)
    extra: tuple[tuple[str, str], ...] = ()
    if request.scratch:
        hba = pgdata / "pitrflow_drill_hba.conf"
        hba.write_text(DRILL_HBA)
        extra = (("hba_file", str(hba)), ("password_encryption", "scram-sha-256"))
    conninfo = (primary_conninfo(request, pgdata, run_as)
                if request.standby and request.primary_conninfo != NO_PRIMARY else "")
    settings = RecoverySettings(
        port=checks.port, listen_addresses=request.listen_addresses, socket_dir=socket_dir,
        restore_command=restore_command, target=plan.target,
        target_timeline=plan.timeline, server_major=plan.backup.server_version // 10000,
        extra=extra, standby=request.standby, primary_conninfo=conninfo,
    )
    write_recovery_config(pgdata, settings)
    log_dir = pgdata / "log"
    log_dir.mkdir(exist_ok=True)
    if run_as is not None:
        chown_tree(pgdata, run_as)
    log_file = log_dir / "pitrflow-restore.log"
    started = time.monotonic()
    procs.run(commands.pg_ctl_start_argv(checks.bins, pgdata, log_file), user=run_as,
              timeout=request.recovery_timeout, what="pg_ctl start", check=False)
    if request.standby:
        result = wait_for_standby(pgdata, log_file, request.recovery_timeout)
    else:
        result = wait_for_promotion(pgdata, log_file, request.recovery_timeout)
    phases["replay_and_start"] = time.monotonic() - started
    if not request.standby or kind == "pitr wal-fetch":
        # (A standby whose restore_command is a plain copy still reads the spool.)
        shutil.rmtree(spool, ignore_errors=True)
    superuser = _bootstrap_superuser(request.instance, socket_dir, checks.port)
    outcome = RestoreOutcome(
        plan=plan, pgdata=pgdata, port=checks.port, socket_dir=socket_dir, run_as=run_as,
        phases=phases, last_transaction=result.last_transaction,
        stop_reason=result.stop_reason, restore_command_kind=kind, superuser=superuser,
        delta=delta, tablespaces=checks.tablespaces, excluded=checks.excluded,
        pg_ctl=checks.bins.tool("pg_ctl"),
    )
    return outcome


def _fill(plan: RestorePlan, request: RestoreRequest, repo: Repository, checks: Preflight,
          phases: dict[str, float]) -> dict[str, int] | None:
    """The base files (full, chain or delta), with the WAL prefetched beside them; a delta
    restore's counts."""
    pgdata, run_as = request.pgdata, checks.run_as
    spool = pgdata / SPOOL_DIR
    started = time.monotonic()
    if len(plan.chain) > 1:
        # pg_combinebackup wants its output directory empty: the spool comes after.
        phases.update(combine_chain(repo, plan.chain, pgdata, checks.bins, run_as,
                                    {p.tablespace.oid: p.target for p in checks.tablespaces},
                                    checks.excluded))
        phases["wal_fetch"] = _fetch_wal(repo, plan, request, spool, run_as)
        return None
    delta = None
    if request.delta:
        delta = start_delta(repo, plan.backup, pgdata, run_as, request.delta_trust_mtime,
                            repo.transfer.process_max)
        p = delta.plan
        log.info("delta restore into %s: %d files kept, %d fetched whole, %d patched, "
                 "%d bytes to fetch, %d paths removed", pgdata, len(p.keep), len(p.write),
                 len(p.patch), p.write_bytes(delta.index), len(p.remove))
        phases["delta_compare"] = time.monotonic() - started
        started = time.monotonic()
    what = f"restore of {plan.instance}" + (" (delta)" if delta else "")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pitr-wal") as side:
        wal = side.submit(_fetch_wal, repo, plan, request, spool, run_as)
        try:
            unpack_backup(repo, plan.backup, pgdata, run_as, what=what,
                          wanted=delta.plan.wanted() if delta else None,
                          index=delta.index if delta else None,
                          tablespaces={p.tablespace.oid: p.target for p in checks.tablespaces},
                          excluded=checks.excluded)
        except BaseException:
            with contextlib.suppress(BaseException):
                wal.result()  # let it stop before the caller cleans up
            raise
        phases["fetch"] = time.monotonic() - started
        phases["wal_fetch"] = wal.result()
    if delta is None:
        return None
    finish_delta(pgdata)
    p = delta.plan
    return {"kept": len(p.keep), "fetched_whole": len(p.write), "patched": len(p.patch),
            "removed": len(p.remove), "bytes_fetched": p.write_bytes(delta.index)}


def _fetch_wal(repo: Repository, plan: RestorePlan, request: RestoreRequest, spool: Path,
               run_as: str | None) -> float:
    started = time.monotonic()
    prefetch_wal(repo, plan.wal, spool, plan.segment_size, request.instance.wal_fetch_parallel)
    _prefetch_histories(repo, plan, spool)
    if run_as is not None:
        chown_tree(spool, run_as)
    return time.monotonic() - started
STANDBY_PASSFILE = "pitrflow_primary.pgpass"
# primary_conninfo of a standby that follows the repository only, streaming from nobody.
NO_PRIMARY = "off"


def primary_conninfo(request: RestoreRequest, pgdata: Path, run_as: str | None) -> str:
    """The standby's primary_conninfo: the given one, or the instance's own connection.

    The password never goes into the conninfo (it would sit in postgresql.auto.conf and
    in every plan and artifact): it is written to a passfile the server's user alone
    can read, and the conninfo names that file.
    """
    from pitrflow.secrets import instance_password

    instance = request.instance
    given = (request.primary_conninfo or "").strip()
    if "password" in given.lower():
        raise RestoreRefusedError("--primary-conninfo must not hold a password",
                                  f"set password_env or password_block of instance "
                                  f"{instance.name}: the standby reads it from a passfile")
    conninfo = given or (f"host={instance.host} port={instance.port} user={instance.user}")
    if "application_name" not in conninfo:
        conninfo += f" application_name=pitrflow_standby_{instance.name}"
    password = instance_password(instance)
    if password:
        passfile = pgdata / STANDBY_PASSFILE
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        passfile.write_text(f"*:*:*:*:{escaped}\n")
        os.chmod(passfile, 0o600)
        if run_as is not None:
            chown_tree(passfile, run_as)
        conninfo += f" passfile={passfile}"
    return conninfo


def _bootstrap_superuser(instance: InstanceConfig, socket_dir: Path, port: int) -> str | None:
    """The restored cluster's bootstrap superuser, for the connect hint (None if unknown)."""
    import psycopg

    from pitrflow.secrets import instance_password

    try:
        password = instance_password(instance)
    except PitrError:
        password = None
    try:
        with psycopg.connect(host=str(socket_dir), port=port, user=instance.user,
                             password=password, dbname=instance.database,
                             connect_timeout=5) as conn:
            row = conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None


def _prefetch_histories(repo: Repository, plan: RestorePlan, spool: Path) -> None:
    from pitrflow.engines.postgres.wal.walfetch import wal_fetch

    for tli in range(2, plan.timeline + 1):
        name = f"{tli:08X}.history"
        wal_fetch(repo, plan.instance, name, spool / name)


def _wipe(pgdata: Path, remove_dir: bool) -> None:
    if remove_dir:
        shutil.rmtree(pgdata, ignore_errors=True)
        return
    for child in pgdata.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()


def stop_instance(pgdata: Path, bins: PgBinaries, run_as: str | None) -> None:
    procs.run(commands.pg_ctl_stop_argv(bins, pgdata), user=run_as, timeout=120,
              what="pg_ctl stop", check=False)


def scratch_name() -> str:
    return uuid.uuid4().hex[:8]


__all__ = ["PitrError", "RestoreOutcome", "RestoreRequest", "execute_restore", "preflight"]
