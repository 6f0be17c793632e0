"""The follower's heartbeat in the repository, and the judgement others make of it.

A running follower rewrites one sealed record, `<instance>/follow/status.json`,
every cycle: its receiver's state, how far the server and the repository
are, when it last uploaded, and its recovery point: the newest moment at
which everything the server had flushed is now stored.  The batch ship_logs
run, `pitr check` and the deployments judge the follower by this record
alone, so they need neither the follower's host nor the database server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from pitrflow.catalog.records import seal, unseal
from pitrflow.config import InstanceConfig
from pitrflow.errors import ObjectNotFoundError, PitrError
from pitrflow.health import age_text
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import follow_status_key

_KIND = "follow-status"
_TIMES = ("started_at", "updated_at", "last_upload_at", "recovery_point")

# Receiver states.  Only "stopped" (a clean stop) hands shipping back to the batch runs;
# "failed" is a follower that ended on an error (its message says which).
STARTING, STREAMING, RECONNECTING = "starting", "streaming", "reconnecting"
STOPPED, FAILED = "stopped", "failed"


@dataclass(frozen=True)
class FollowerStatus:
    instance: str
    state: str
    host: str
    pid: int
    started_at: datetime
    updated_at: datetime
    synchronous: bool
    partial_interval: int
    timeline: int | None = None
    server_lsn: int | None = None  # the server's flush position when last asked
    received_lsn: int | None = None  # what the receiver had written, as the server reports it
    stored_lsn: int | None = None  # the repository holds WAL up to here on `timeline`
    recovery_point: datetime | None = None
    last_upload_at: datetime | None = None
    last_segment: str | None = None
    last_partial: str | None = None
    message: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def lag_seconds(self, now: datetime) -> float | None:
        """How old the repository's copy of the server is: now minus the recovery point."""
        if self.recovery_point is None:
            return None
        return max(0.0, (now - self.recovery_point).total_seconds())

    def with_(self, **changes: object) -> FollowerStatus:
        return replace(self, **changes)  # type: ignore[arg-type]


def dump_status(status: FollowerStatus) -> bytes:
    body = asdict(status)
    for name in _TIMES:
        value = getattr(status, name)
        body[name] = value.isoformat() if value is not None else None
    return seal(_KIND, body)


def load_status(data: bytes, key: str) -> FollowerStatus:
    doc = unseal(_KIND, data, key)
    for name in ("format", "kind"):
        doc.pop(name, None)
    for name in _TIMES:
        doc[name] = datetime.fromisoformat(doc[name]) if doc.get(name) else None
    return FollowerStatus(**doc)


def write_status(repo: Repository, status: FollowerStatus) -> None:
    repo.put_bytes(follow_status_key(status.instance), dump_status(status))


def read_status(repo: Repository, instance: str) -> FollowerStatus | None:
    key = follow_status_key(instance)
    try:
        return load_status(repo.get_bytes(key), key)
    except ObjectNotFoundError:
        return None


@dataclass(frozen=True)
class FollowerHealth:
    ok: bool
    detail: str
    problem: str
    status: FollowerStatus | None
    lag_seconds: float | None


def judge(instance: InstanceConfig, status: FollowerStatus | None,
          now: datetime) -> FollowerHealth:
    """Pure: is the follower running, and is the repository within the lag it may have?"""
    limit = instance.check.max_follower_lag_seconds
    name = instance.name
    if status is None:
        return FollowerHealth(False, "", f"no follower of {name} has ever reported: start "
                              f"one (pitr ship {name} --follow, or the follow_wal deployment)",
                              None, None)
    lag = status.lag_seconds(now)
    heartbeat = (now - status.updated_at).total_seconds()
    where = f"{status.host} pid {status.pid}"
    if status.state == STOPPED:
        return FollowerHealth(False, "", f"the follower of {name} was stopped "
                              f"{age_text(now, status.updated_at)} ({where}): start it again",
                              status, lag)
    if status.state == FAILED:
        return FollowerHealth(False, "", f"the follower of {name} ended on an error "
                              f"{age_text(now, status.updated_at)} ({where}): {status.message}",
                              status, lag)
    if heartbeat > limit:
        return FollowerHealth(False, "", f"the follower of {name} is gone: its last heartbeat "
                              f"({where}, state {status.state}) is "
                              f"{age_text(now, status.updated_at)}, over {limit:g} s", status, lag)
    if lag is None or lag > limit:
        behind = "has stored nothing yet" if lag is None else f"is {lag:.0f} s behind"
        why = f" ({status.message})" if status.message else ""
        return FollowerHealth(False, "", f"the follower of {name} {behind} (limit {limit:g} s), "
                              f"receiver {status.state}{why}", status, lag)
    upload = age_text(now, status.last_upload_at) if status.last_upload_at else "never"
    detail = (f"{status.state}{', synchronous' if status.synchronous else ''}, lag "
              f"{lag:.0f} s, last upload {upload}, timeline {status.timeline}")
    return FollowerHealth(True, detail, "", status, lag)


def follower_health(instance: InstanceConfig, repo: Repository,
                    now: datetime) -> FollowerHealth:
    try:
        status = read_status(repo, instance.name)
    except PitrError as exc:
        return FollowerHealth(False, "", f"the follower status of {instance.name} cannot be "
                              f"read: {exc.message}", None, None)
    return judge(instance, status, now)


def follower_in_charge(instance: InstanceConfig, status: FollowerStatus | None,
                       now: datetime) -> bool:
    """Whether batch shipping must leave the slot to a follower and check it instead.

    `follow = true` in the config says so for good.  Otherwise a follower
    started by hand counts while its heartbeat is fresh: a batch run beside it
    would only collide on the slot.
    """
    if instance.follow:
        return True
    if status is None or status.state == STOPPED:
        return False
    age = (now - status.updated_at).total_seconds()
    return age <= instance.check.max_follower_lag_seconds
