"""Optional repository operations for stores that lock objects after writing (S3 Object Lock).

A driver that declares `features.object_lock` writes every object with a
retention date and implements these operations.  Its `delete` removes every
stored version of an object (so space is really freed, not hidden behind a
delete marker) and raises ObjectLockedError, naming the date, inside the lock:
callers that delete (expire, cleanup, rekey) report that and finish on a later run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pitrflow.storage.base import Repository


@dataclass(frozen=True)
class LockStatus:
    """What the store says about its own protection, for pitr check."""

    mode: str  # the mode new objects are written with
    days: int
    versioning: str | None  # "Enabled", "Suspended" or None
    bucket_lock: bool  # the bucket has Object Lock enabled
    problem: str | None = None  # the bucket settings could not be read


class LockingRepository(Repository, Protocol):
    def retained_until(self, key: str) -> datetime | None:
        """The current version's retain-until date, None when it has none (or is gone)."""
        ...

    def extend_lock(self, key: str) -> None:
        """Lock the object at least as long as an object written now would be."""
        ...

    def lock_status(self) -> LockStatus: ...


def locked_until(repo: Repository, key: str) -> datetime | None:
    """retained_until for repositories with Object Lock, None for the others."""
    if not repo.features.object_lock:
        return None
    return repo.retained_until(key)  # type: ignore[attr-defined, no-any-return]


def still_locked(repo: Repository, keys: Iterable[str], now: datetime | None = None,
                 ) -> datetime | None:
    """The latest lock among `keys` that has not lapsed yet; None when all can be deleted."""
    if not repo.features.object_lock:
        return None
    now = now or datetime.now(UTC)
    dates = [d for key in keys if (d := locked_until(repo, key)) is not None and d > now]
    return max(dates, default=None)
