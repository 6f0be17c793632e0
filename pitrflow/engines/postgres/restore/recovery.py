"""Recovery settings for a restored data directory, and watching recovery end.

The restored instance gets its own port, listen address and socket
directory (the source's may not exist where it is restored), and the
source's archiving is switched off so a restored copy never writes into the
production WAL archive.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from pitrflow.engines.base import RestoreTarget
from pitrflow.errors import RecoveryFailedError

# The restored instance's socket lives in a directory only its own user (and
# root) can enter, so trusting the socket admits nobody else.
MINIMAL_HBA = """# written by pitrflow: the source kept its pg_hba.conf outside the data directory
local   all   all                 trust
host    all   all   127.0.0.1/32  scram-sha-256
host    all   all   ::1/128       scram-sha-256
"""

_LAST_TXN_RE = re.compile(r"last completed transaction was at log time (.+)$", re.M)
_STOP_RE = re.compile(r"recovery stopping (?:before|after) .*?time (.+)$", re.M)
_FATAL_RE = re.compile(r"^.*\b(FATAL|PANIC):\s+(.*)$", re.M)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def target_settings(target: RestoreTarget, timeline: int) -> dict[str, str]:
    """recovery_target_* for a target: PostgreSQL's own words for each kind."""
    settings: dict[str, str] = {}
    kind = target.kind
    if kind == "time":
        assert target.time is not None
        settings["recovery_target_time"] = _quote(target.time.isoformat())
    elif kind == "xid":
        settings["recovery_target_xid"] = _quote(str(target.xid))
    elif kind == "lsn":
        settings["recovery_target_lsn"] = _quote(str(target.lsn))
    elif kind == "name":
        settings["recovery_target_name"] = _quote(str(target.name))
    elif kind == "immediate":
        settings["recovery_target"] = _quote("immediate")
    if kind in ("time", "xid", "lsn"):
        settings["recovery_target_inclusive"] = "off" if target.exclusive else "on"
    # The plan follows the timeline it chose (the target's, or the one asked for), so
    # recovery must follow the same one.
    settings["recovery_target_timeline"] = _quote(
        target.timeline if target.timeline in ("latest", "current") else str(timeline))
    return settings


@dataclass(frozen=True)
class RecoverySettings:
    port: int
    listen_addresses: str
    socket_dir: Path
    restore_command: str
    target: RestoreTarget
    target_timeline: int
    server_major: int
    extra: tuple[tuple[str, str], ...] = ()
    # A standby keeps replaying (from the repository, and from the primary when
    # primary_conninfo is set) and is never promoted.
    standby: bool = False
    primary_conninfo: str = ""

    def lines(self) -> list[str]:
        settings: dict[str, str] = {
            "port": str(self.port),
            "listen_addresses": _quote(self.listen_addresses),
            "unix_socket_directories": _quote(str(self.socket_dir)),
            "archive_mode": "off",
            "archive_command": _quote(""),
            "restore_command": _quote(self.restore_command),
            "recovery_target_action": _quote("promote"),
            "hot_standby": "on",
            "logging_collector": "off",
            "primary_conninfo": _quote(self.primary_conninfo),
            "primary_slot_name": _quote(""),
        }
        if self.server_major >= 15:
            settings["archive_library"] = _quote("")
        if self.standby:
            settings["recovery_target_timeline"] = _quote("latest")
        else:
            settings.update(target_settings(self.target, self.target_timeline))
        settings.update({k: _quote(v) for k, v in self.extra})
        body = [f"{k} = {v}" for k, v in settings.items()]
        return ["", "# pitrflow restore settings (later lines win)", *body, ""]


def write_recovery_config(data_dir: Path, settings: RecoverySettings) -> None:
    """Restore settings into postgresql.auto.conf, and the signal file that starts recovery
    (standby.signal for a standby, recovery.signal otherwise)."""
    conf = data_dir / "postgresql.conf"
    if not conf.exists():
        # Debian-style clusters keep their config outside the data directory.
        conf.write_text("# written by pitrflow restore; settings are in postgresql.auto.conf\n")
    hba = data_dir / "pg_hba.conf"
    if not hba.exists():
        hba.write_text(MINIMAL_HBA)
    ident = data_dir / "pg_ident.conf"
    if not ident.exists():
        ident.write_text("")
    with open(data_dir / "postgresql.auto.conf", "a") as handle:
        handle.write("\n".join(settings.lines()))
    (data_dir / ("standby.signal" if settings.standby else "recovery.signal")).write_text("")


@dataclass(frozen=True)
class RecoveryResult:
    seconds: float
    last_transaction: str | None
    stop_reason: str | None


def _postmaster_status(data_dir: Path) -> str | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    return lines[7].strip() if len(lines) >= 8 else "starting"


def _log_tail(log_file: Path, n: int = 15) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return ""


def wait_for_standby(data_dir: Path, log_file: Path, timeout: float) -> RecoveryResult:
    """Block until a standby accepts read-only connections, or fail with its FATAL line."""
    started = time.monotonic()
    while True:
        status = _postmaster_status(data_dir)
        if status is None:
            text = _log_tail(log_file, 200)
            fatal = _FATAL_RE.findall(text)
            why = fatal[-1][1] if fatal else "the server exited during recovery"
            raise RecoveryFailedError(f"standby {data_dir} failed to start: {why}",
                                      f"see {log_file}; the data directory is left for "
                                      "inspection")
        if status in ("standby", "ready"):
            break
        if time.monotonic() - started > timeout:
            raise RecoveryFailedError(f"standby {data_dir} did not reach a consistent state "
                                      f"in {timeout:.0f} s", f"see {log_file}")
        time.sleep(0.1)
    text = log_file.read_text(errors="replace")
    last = _LAST_TXN_RE.findall(text)
    return RecoveryResult(time.monotonic() - started, last[-1].strip() if last else None,
                          "running as a standby (not promoted)")


def wait_for_promotion(data_dir: Path, log_file: Path, timeout: float) -> RecoveryResult:
    """Block until recovery ended and the server accepts writes, or fail with its FATAL line."""
    started = time.monotonic()
    while True:
        status = _postmaster_status(data_dir)
        if status is None:
            text = _log_tail(log_file, 200)
            fatal = _FATAL_RE.findall(text)
            why = fatal[-1][1] if fatal else "the server exited during recovery"
            raise RecoveryFailedError(
                f"recovery of {data_dir} failed: {why}",
                f"see {log_file}; the data directory is left for inspection",
            )
        if status == "ready" and not (data_dir / "recovery.signal").exists():
            break
        if time.monotonic() - started > timeout:
            raise RecoveryFailedError(f"recovery of {data_dir} did not finish in {timeout:.0f} s",
                                      f"see {log_file}")
        time.sleep(0.1)
    text = log_file.read_text(errors="replace")
    last = _LAST_TXN_RE.findall(text)
    stop = _STOP_RE.findall(text)
    return RecoveryResult(time.monotonic() - started, last[-1].strip() if last else None,
                          stop[-1].strip() if stop else None)
