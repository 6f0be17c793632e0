"""Health checks as `barman check` prints them: one `name: OK` / `name: FAILED (hint)` line each.

The shape every engine's checks share (PostgreSQL's in engines/postgres/health,
SQL Server's in engines/sqlserver/health), and the checks that read only
repository records both engines keep in the same shape (drills).  The exit
status is non-zero when any critical check fails; the same results render as
text, JSON and a Prefect artifact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from pitrflow.config import InstanceConfig
from pitrflow.drill.record import drill_history
from pitrflow.errors import PitrError
from pitrflow.storage.base import Repository
from pitrflow.storage.locking import LockStatus


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""
    hint: str = ""
    critical: bool = True

    def line(self) -> str:
        if self.ok:
            return f"{self.name}: OK" + (f" ({self.detail})" if self.detail else "")
        text = f"{self.name}: FAILED ({self.hint or self.detail})"
        return text if self.critical else text + " [warning]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def age_text(now: datetime, then: datetime) -> str:
    seconds = (now - then).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def drill_check(instance: InstanceConfig, repo: Repository, now: datetime) -> Check:
    """The newest passing drill record's age; a warning, never critical."""
    passing = [d for d in drill_history(repo, instance.name, limit=50) if d.passed]
    if not passing:
        return Check("newest passing drill", False,
                     hint=f"no drill has passed yet: run pitr drill {instance.name}",
                     critical=False)
    last = passing[-1].started
    return Check("newest passing drill",
                 now - last <= timedelta(hours=instance.check.max_drill_age_hours),
                 age_text(now, last), f"the newest passing drill is {age_text(now, last)}",
                 critical=False)


def protection_checks(instance: InstanceConfig, repo: Repository) -> list[Check]:
    """Encryption (does the master key open the data keys) and Object Lock (is the bucket
    versioned and lockable, do the locks outlast the retention window)."""
    checks: list[Check] = []
    if repo.features.encrypted:
        try:
            summary = repo.encryption_summary()  # type: ignore[attr-defined]
        except PitrError as exc:
            checks.append(Check("encryption", False, hint=exc.message))
        else:
            checks.append(Check("encryption", True, summary))
    if repo.features.object_lock:
        checks.append(_lock_check(instance, repo.lock_status()))  # type: ignore[attr-defined]
    return checks


def _lock_check(instance: InstanceConfig, status: LockStatus) -> Check:
    def warn(hint: str) -> Check:
        return Check("object lock", False, hint=hint, critical=False)

    if status.problem:
        return warn(status.problem)
    if not status.bucket_lock:
        return warn("the bucket has no Object Lock configuration, so locked writes fail: "
                    "create it with Object Lock enabled (infra/terraform: object_lock_enabled)")
    if status.versioning != "Enabled":
        return warn(f"the bucket's versioning is {status.versioning or 'off'}: Object Lock "
                    "needs it enabled")
    window = instance.retention.window_days
    if window is not None and status.days < window:
        return warn(f"objects are locked for {status.days} days, less than the {window:g}-day "
                    "retention window: an attacker could delete backups the window still "
                    "needs; set object_lock.days to the window plus the interval between "
                    "full backups plus a margin")
    return Check("object lock", True, f"{status.mode}, {status.days} days, bucket versioned "
                 "with Object Lock")


def render_lines(checks: list[Check]) -> str:
    return "\n".join(c.line() for c in checks)


def failed_critical(checks: list[Check]) -> bool:
    return any(not c.ok and c.critical for c in checks)
