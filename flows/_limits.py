"""Slots that keep runs of one instance (or one data directory) from overlapping.

Two backups of one instance at once double the load on the server and race for
the parent of an incremental; two ship runs race for the same replication slot;
two restores into one data directory (or one database) destroy each other.  Prefect global
concurrency limits, held with ``strict=True``, prevent all three across every
worker: a missing limit is then an error instead of a silent pass.

Strict is opt-in through ``PITRFLOW_CONCURRENCY=strict``, which the generated
deployments set in their job variables, because strict needs the limit to exist.
A deployment's limits are created by ``python -m deployments.setup``; an ad-hoc
``pitr backup full main`` on a laptop runs against Prefect's ephemeral API,
where no setup step ever ran and no limit exists.  Strict there would fail
every such run, and non-strict would let everything through after a warning
and a round trip, so without the variable the slot is a documented no-op.
Set the variable on any host whose CLI runs talk to the production server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

CONCURRENCY_ENV = "PITRFLOW_CONCURRENCY"
STRICT = "strict"
KINDS = ("backup", "ship")

# Lease renewal failures must not kill a six-hour backup over one API blip; the
# lease is renewed every 75% of this, and a crashed holder frees the slot when
# it expires.
_LEASE_SECONDS = 300.0


def limit_name(kind: str, instance: str) -> str:
    """The global concurrency limit that serializes KIND runs of INSTANCE."""
    if kind not in KINDS:
        raise ValueError(f"unknown slot kind {kind!r}; known: {', '.join(KINDS)}")
    return f"pitrflow-{kind}-{instance}"


def destination_lock_name(destination: str | os.PathLike[str]) -> str:
    """A limit name for one restore destination (a data directory, a database on a
    server): readable, and unique per destination.

    Prefect names may not contain '/', so the name is flattened; the hash keeps
    '/a-b' and '/a/b' apart.  Paths are made absolute first.
    """
    path = str(destination)
    if not path.startswith(("/", "~", ".")) and "://" not in path and ":" in path:
        path = path.rstrip("/")  # host:port/database
    else:
        path = str(Path(destination).expanduser().absolute())
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", path).strip("-")[-60:]
    digest = hashlib.sha256(path.encode()).hexdigest()[:10]
    return f"pitrflow-restore-{readable}-{digest}"


def strict_enabled() -> bool:
    return os.environ.get(CONCURRENCY_ENV, "").strip().lower() == STRICT


@contextlib.contextmanager
def _hold(name: str) -> Iterator[None]:
    from prefect.concurrency.sync import concurrency

    with concurrency(name, occupy=1, strict=True, lease_duration=_LEASE_SECONDS,
                     raise_on_lease_renewal_failure=False):
        yield


@contextlib.contextmanager
def instance_slot(kind: str, instance: str) -> Iterator[None]:
    """Hold the one KIND slot of INSTANCE while the body runs (strict mode only)."""
    name = limit_name(kind, instance)
    if not strict_enabled():
        yield
        return
    with _hold(name):
        yield


def ensure_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit NAME with LIMIT slots unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):  # created by a concurrent run
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit))


@contextlib.contextmanager
def destination_lock(destination: str | os.PathLike[str], writes: bool = True
                     ) -> Iterator[None]:
    """Hold a restore destination exclusively while a restore writes it (strict mode only).

    Its limit is created on first use: the path is only known when the restore
    is asked for, so no setup step can create it in advance.  A dry run writes
    nothing, and a drill's scratch directory is new and unique to that drill,
    so callers pass ``writes=False`` for those and no limit piles up per drill.
    """
    if not writes or not strict_enabled():
        yield
        return
    name = destination_lock_name(destination)
    ensure_limit(name)
    with _hold(name):
        yield
