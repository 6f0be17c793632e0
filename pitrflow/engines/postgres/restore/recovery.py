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
from datetime import datetime
from pathlib import Path

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


@dataclass(frozen=True)
class RecoverySettings:
    port: int
    listen_addresses: str
    socket_dir: Path
    restore_command: str
    target_time: datetime | None
    target_timeline: int
    server_major: int
    extra: tuple[tuple[str, str], ...] = ()

    def lines(self) -> list[str]:
        settings: dict[str, str] = {
            "port": str(self.port),
            "listen_addresses": _quote(self.listen_addresses),
            "unix_socket_directories": _quote(str(self.socket_dir)),
            "archive_mode": "off",
            "archive_command": _quote(""),
            "restore_command": _quote(self.restore_command),
            "recovery_target_timeline": _quote(str(self.target_timeline)),
            "recovery_target_action": _quote("promote"),
            "hot_standby": "on",
            "logging_collector": "off",
            "primary_conninfo": _quote(""),
            "primary_slot_name": _quote(""),
        }
        if self.server_major >= 15:
            settings["archive_library"] = _quote("")
        if self.target_time is not None:
            settings["recovery_target_time"] = _quote(self.target_time.isoformat())
            settings["recovery_target_inclusive"] = "on"
        settings.update({k: _quote(v) for k, v in self.extra})
        body = [f"{k} = {v}" for k, v in settings.items()]
        return ["", "# pitrflow restore settings (later lines win)", *body, ""]


def write_recovery_config(data_dir: Path, settings: RecoverySettings) -> None:
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
    (data_dir / "recovery.signal").write_text("")


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
