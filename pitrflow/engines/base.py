"""What an engine does, in the product's words, and the typed results it returns.

Everything above `pitrflow/engines/` (tasks, flows, the CLI, the local runner)
talks to a database engine only through `Engine`: it never names PostgreSQL or
SQL Server and never branches on which one it holds.  Each operation returns an
`Outcome` that carries the same facts three ways: `text` for a terminal,
`markdown` (and, where tabular, `table`) for a Prefect artifact, and `data` for
JSON and flow results.  Engine-specific plans travel inside the outcomes
opaquely, so a plan made by one call is what the next call carries out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pitrflow.errors import (
    CheckFailedError,
    DrillFailedError,
    PitrError,
    UsageError,
    VerifyFailedError,
)
from pitrflow.health import Check
from pitrflow.storage.base import Repository

BackupKind = Literal["full", "incremental", "log"]


@dataclass(frozen=True)
class RestoreTarget:
    """Where recovery stops.  At most one kind is given; none means the newest point.

    - `time`: a timezone-aware moment;
    - `xid`: a transaction id (PostgreSQL);
    - `lsn`: a log sequence number, PostgreSQL's `0/5000028` or SQL Server's decimal;
    - `name`: a named restore point (PostgreSQL, recorded by `pitr mark`) or a marked
      transaction (SQL Server, WITH MARK);
    - `immediate`: the end of the backup, as soon as it is consistent.
    `exclusive` stops just before the target instead of just after it (time, xid,
    LSN; SQL Server: STOPBEFOREMARK).  `timeline` (PostgreSQL) is `latest`,
    `current` or a timeline number to recover along.
    """

    time: datetime | None = None
    xid: int | None = None
    lsn: str | None = None
    name: str | None = None
    immediate: bool = False
    exclusive: bool = False
    timeline: str | None = None

    def __post_init__(self) -> None:
        if self.time is not None and self.time.utcoffset() is None:
            raise UsageError(
                f"target time {self.time.isoformat()} has no timezone",
                "give an offset, e.g. 2026-11-26T09:45:00+00:00",
            )
        given = [k for k in ("time", "xid", "lsn", "name") if getattr(self, k) is not None]
        if self.immediate:
            given.append("immediate")
        if len(given) > 1:
            raise UsageError(f"a restore has one target, got {' and '.join(given)}",
                             "give one of --to, --target-xid, --target-lsn, --target-name, "
                             "--immediate")
        if self.exclusive and not any(getattr(self, k) is not None
                                      for k in ("time", "xid", "lsn", "name")):
            raise UsageError("--exclusive stops just before a target, and none was given",
                             "use it with --to TIME, --target-xid, --target-lsn or "
                             "--target-name")
        if self.xid is not None and self.xid < 3:
            raise UsageError(f"transaction id {self.xid} is not a normal transaction",
                             "normal transaction ids start at 3")
        if self.name is not None and not self.name.strip():
            raise UsageError("the target name is empty", "give the restore point's name")
        if self.timeline is not None and self.timeline not in ("latest", "current") and (
                not self.timeline.isdigit() or int(self.timeline) < 1):
            raise UsageError(f"target timeline {self.timeline!r} is not latest, current or "
                             "a timeline number", "e.g. --target-timeline 2")

    @property
    def kind(self) -> str:
        """time | xid | lsn | name | immediate | latest."""
        for kind in ("time", "xid", "lsn", "name"):
            if getattr(self, kind) is not None:
                return kind
        return "immediate" if self.immediate else "latest"

    @property
    def is_latest(self) -> bool:
        return self.kind == "latest"

    def describe(self) -> str:
        kind = self.kind
        text = {"latest": "latest", "immediate": "immediate (the end of the backup)",
                "time": self.time.isoformat() if self.time else "",
                "xid": f"transaction {self.xid}", "lsn": f"LSN {self.lsn}",
                "name": f"restore point {self.name!r}"}[kind]
        if self.exclusive:
            text += " (exclusive: just before it)"
        if self.timeline is not None:
            text += f" on timeline {self.timeline}"
        return text

    def flow_parameters(self) -> dict[str, Any]:
        """The restore_to_point parameters that describe this target."""
        return {"target_time": self.time, "target_xid": self.xid, "target_lsn": self.lsn,
                "target_name": self.name, "immediate": self.immediate,
                "exclusive": self.exclusive, "target_timeline": self.timeline}


@dataclass(frozen=True)
class RestoreDestination:
    """Where a restore writes, for every engine in one object.

    PostgreSQL reads `pgdata` (a new or empty data directory) and `port`;
    SQL Server reads `database_name` (default: a new name) and `replace`.
    `scratch` marks a drill's throwaway copy, which its checks may reach as
    superuser.  An engine refuses, in one line, what it needs and lacks.
    """

    pgdata: str = ""
    port: int | None = None
    database_name: str | None = None
    replace: bool = False
    scratch: bool = False
    # PostgreSQL: restore as a standby that follows the repository and streams from
    # primary_conninfo (None: the instance's own connection; "off": no streaming).
    standby: bool = False
    primary_conninfo: str | None = None
    # PostgreSQL: into an existing data directory of the same cluster, rewriting only
    # what differs from the backup (delta_trust_mtime: size and mtime suffice).
    delta: bool = False
    delta_trust_mtime: bool = False
    # PostgreSQL: where user tablespaces go, as (NAME_OR_OID, DIR) pairs; the others under
    # tablespace_map_all/<name>; without either, their recorded locations.
    tablespace_map: tuple[tuple[str, str], ...] = ()
    tablespace_map_all: str | None = None
    # PostgreSQL: restore only these databases (and the system ones); the others come
    # back as zero-filled files, to be dropped.
    db_include: tuple[str, ...] = ()

    def flow_parameters(self) -> dict[str, Any]:
        """The restore_to_point parameters that describe this destination."""
        return {"pgdata": self.pgdata, "port": self.port, "database_name": self.database_name,
                "replace": self.replace, "scratch": self.scratch, "standby": self.standby,
                "primary_conninfo": self.primary_conninfo, "delta": self.delta,
                "delta_trust_mtime": self.delta_trust_mtime,
                "tablespace_map": dict(self.tablespace_map) or None,
                "tablespace_map_all": self.tablespace_map_all,
                "db_include": list(self.db_include) or None}


def tablespace_pairs(value: Mapping[str, str] | Sequence[str] | str | None
                     ) -> tuple[tuple[str, str], ...]:
    """(NAME_OR_OID, DIR) pairs from a mapping, NAME=DIR items, or one string of them
    separated by commas or new lines (a flow parameter typed in the UI)."""
    if not value:
        return ()
    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        texts = value.replace("\n", ",").split(",") if isinstance(value, str) else list(value)
        items = []
        for text in (t.strip() for t in texts):
            if not text:
                continue
            key, sep, directory = text.partition("=")
            if not sep:
                raise UsageError(f"tablespace map {text!r} is not NAME_OR_OID=DIR",
                                 "e.g. --tablespace-map ts_orders=/srv/restore/ts_orders")
            items.append((key.strip(), directory.strip()))
    for key, directory in items:
        if not key or not directory:
            raise UsageError(f"tablespace map {key}={directory} needs a name (or OID) and a "
                             "directory", "e.g. --tablespace-map ts_orders=/srv/restore/ts")
    return tuple(items)


@dataclass
class Outcome:
    """The result of one engine operation, rendered once for every reader.

    `artifact` is the kind of Prefect artifact it is published as (its key is
    `<artifact>-<instance>`); `table` is set when the artifact is a table.
    """

    instance: str
    artifact: str
    text: str
    markdown: str
    data: dict[str, Any]
    table: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.data


@dataclass
class BackupResult(Outcome):
    backup_id: str = ""
    kind: str = ""
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class ShipResult(Outcome):
    """What a ship stored; `recoverable_to` is the newest point a restore can now reach,
    `size_bytes` what this run added to the repository."""

    recoverable_to: str | None = None
    size_bytes: int = 0


@dataclass
class RestorePlan(Outcome):
    """A checked plan for one restore; `plan` is the engine's own, carried to `restore`."""

    plan: Any = None
    target: RestoreTarget = field(default_factory=RestoreTarget)
    destination: RestoreDestination = field(default_factory=RestoreDestination)
    # What the restore writes (a data directory, a database on a server): runs that
    # write the same place are serialized on it.
    lock: str = ""


@dataclass
class RestoreResult(Outcome):
    """A restored, running copy; its `data` tells a drill how to reach it."""


@dataclass
class ExpirePlan(Outcome):
    plan: Any = None
    empty: bool = True


@dataclass
class ExpireResult(Outcome):
    deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0


@dataclass
class VerifyReport(Outcome):
    problems: list[str] = field(default_factory=list)

    def failure(self) -> PitrError | None:
        """The error a run ends with when verify found anything, naming every bad object."""
        if not self.problems:
            return None
        return VerifyFailedError(
            f"verify of {self.instance} found {len(self.problems)} problem(s): "
            + "; ".join(self.problems),
            "restore from an older backup, or take a new full backup; pitr info shows "
            "verify status")


@dataclass
class CheckReport(Outcome):
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """Names of the critical checks that failed (warnings do not count)."""
        return [c.name for c in self.checks if not c.ok and c.critical]

    def failure(self) -> PitrError | None:
        if not self.failed:
            return None
        return CheckFailedError(f"check of {self.instance} failed: {', '.join(self.failed)}",
                                "see the check lines (or the check artifact) for the hints",
                                details=self.data["checks"])


@dataclass
class DrillResult(Outcome):
    passed: bool = False
    problems: list[str] = field(default_factory=list)
    record_key: str = ""
    evidence: str | None = None

    def failure(self) -> PitrError | None:
        """A failed drill is loud: the run fails, naming the first finding."""
        if self.passed:
            return None
        first = self.problems[0] if self.problems else "the drill did not pass"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return DrillFailedError(f"recovery drill of {self.instance} failed: {first}{more}",
                                f"see the drill artifact and the evidence in "
                                f"{self.evidence or self.record_key}")


class DrillSession(Protocol):
    """One recovery drill, step by step, so a flow can run each step as its own task
    and restore through the same restore_to_point flow users rely on."""

    instance: str
    target: RestoreTarget
    destination: RestoreDestination

    def record_error(self, message: str) -> None:
        """Note a step that could not run; the drill then fails."""

    def check_integrity(self, restored: dict[str, Any]) -> list[str]:
        """Physical checks of the restored copy (`restored`: the restore's data); findings."""

    def check_quality(self, restored: dict[str, Any]) -> list[dict[str, Any]]:
        """Team and generated suites against the restored copy; returns the checks table."""

    def finish(self, restored: dict[str, Any] | None, keep: bool) -> DrillResult:
        """Tear down (unless kept), store the drill record and evidence, give the verdict."""


class Engine(Protocol):
    """A database engine: PostgreSQL or SQL Server, behind the same operations."""

    name: str
    instance: str

    def backup(self, repo: Repository, kind: BackupKind,
               allow_full_fallback: bool | None = None) -> BackupResult:
        """Take a backup of `kind` (an incremental is a differential where that is the
        engine's word; `log` is a transaction-log backup) and store it."""

    def ship(self, repo: Repository) -> ShipResult:
        """Store the transaction log up to now and record how far a restore can reach."""

    def follow(self, repo: Repository) -> Outcome:
        """Stream the transaction log into the repository continuously until SIGTERM
        (follow mode); engines that cannot refuse in one line."""

    def plan_restore(self, repo: Repository, target: RestoreTarget,
                     destination: RestoreDestination) -> RestorePlan:
        """Plan a restore and check the destination; refuses before anything is written."""

    def restore(self, repo: Repository, plan: RestorePlan) -> RestoreResult:
        """Carry out a plan made by plan_restore."""

    def prepare_drill(self, repo: Repository, to: str) -> DrillSession:
        """Choose a drill's target (a time, latest or random) and read the source's facts."""

    def plan_expire(self, repo: Repository, now: datetime) -> ExpirePlan:
        """What retention would delete and keep, with reasons; changes nothing."""

    def expire(self, repo: Repository, plan: ExpirePlan) -> ExpireResult:
        """Carry out an expire plan, safely against interruption."""

    def verify(self, repo: Repository, backup_id: str | None) -> VerifyReport:
        """Re-read every object of the backups (or one) and what they need to restore."""

    def verify_text(self, results: list[dict[str, Any]]) -> str:
        """The lines `pitr verify` prints for verify results (VerifyReport.data["results"])."""

    def check(self, repo: Repository, now: datetime) -> CheckReport:
        """One line per health check of the server, the repository and the history."""

    def info(self, repo: Repository) -> Outcome:
        """What the repository holds for the instance and the window a restore can reach."""

    def mark(self, repo: Repository, name: str) -> Outcome:
        """Create a named point a restore can later stop at, and record it."""

    def import_history(self, repo: Repository, recording: str) -> Outcome:
        """Store recorded backup history (SQL Server's msdb rows) as planning-only backups,
        so plans and dry runs can be seen before any real backup; engines without such a
        history refuse in one line."""
