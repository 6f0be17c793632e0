"""The deployments the config asks for, as plain data: one set per instance.

The config already names every instance, so the deployments are derived from
it rather than kept by hand beside it.  Each deployment is named after its
instance, so runs read `backup_full/main` in the UI, and its parameters carry
only the instance name and the config path: passwords stay in the worker's
environment or in blocks.  `deployments.register` applies this list to a
server through Prefect's API; `deployments.generate` writes it as prefect.yaml
for those who deploy with `prefect deploy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deployments.specs import FLOWS, FOLLOW, STRICT_ENV, FlowSpec, instance_offset
from pitrflow.config import Config
from pitrflow.errors import UsageError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Every deployment pitr deploy registers carries this tag: only those are ever
# updated or removed by it (automations carry the same tag).
MANAGED_TAG = "pitrflow-managed"
_BANNED = set("/%&><")


def check_name(what: str, value: str) -> str:
    """Refuse a name Prefect would reject later, deep inside a registration."""
    if not value or _BANNED & set(value):
        raise UsageError(f"{what} {value!r} is not a valid Prefect name",
                         "use letters, digits, '-', '_' or '.'")
    return value


def check_timezone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {timezone!r}",
                         "use an IANA name such as UTC or Europe/Paris") from None
    return timezone


def instance_tag(instance: str) -> str:
    return f"pitrflow-instance-{instance}"


@dataclass(frozen=True)
class Deployment:
    """One deployment of one flow for one instance, as it should be on the server."""

    spec: FlowSpec
    instance: str
    pool: str
    timezone: str
    config_path: str
    project_root: str
    offset: timedelta = timedelta(0)
    tags: tuple[str, ...] = field(default=())

    @property
    def flow(self) -> str:
        return self.spec.flow

    @property
    def key(self) -> str:
        """`flow/name`, as `prefect deployment run` and the UI name it."""
        return f"{self.spec.flow}/{self.instance}"

    @property
    def parameters(self) -> dict[str, Any]:
        return {"instance": self.instance, "config_path": self.config_path}

    @property
    def rrule(self) -> str | None:
        return self.spec.cadence.rrule(self.offset) if self.spec.cadence else None

    @property
    def job_variables(self) -> dict[str, Any]:
        return {"env": dict(STRICT_ENV)}

    @property
    def pull_steps(self) -> list[dict[str, Any]]:
        # The worker changes into the checkout before it imports the entrypoint.
        return [{"prefect.deployments.steps.set_working_directory": {
            "directory": self.project_root}}]


def desired_deployments(config: Config, *, pool: str, timezone: str,
                        project_root: Path = PROJECT_ROOT,
                        worker_config: str | None = None) -> list[Deployment]:
    """Every deployment for every instance in CONFIG, sorted by instance then flow.

    `project_root` is where the worker finds flows/; `worker_config` is the
    config path as the worker sees it, when it differs from where this runs
    (a container mount, say).
    """
    check_name("work pool", pool)
    check_timezone(timezone)
    config_path = worker_config or str(config.source)
    spread = timedelta(minutes=config.schedules.spread_minutes)
    wanted = []
    for name in sorted(config.instances):
        check_name("instance", name)
        offset = instance_offset(name, spread)
        # A follower only for instances in follow mode (see deployments.specs.FOLLOW).
        for spec in FLOWS + ((FOLLOW,) if config.instances[name].follow else ()):
            wanted.append(Deployment(spec, name, pool, timezone, config_path, str(project_root),
                                     offset, ("pitrflow", MANAGED_TAG, instance_tag(name))))
    return wanted
