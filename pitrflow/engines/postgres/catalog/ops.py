"""Repository-level operations shared by the CLI and the tasks: expire."""

from __future__ import annotations

from datetime import UTC, datetime

from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres.catalog.expire import ExpireResult, execute_expire
from pitrflow.engines.postgres.catalog.retention import ExpirePlan, plan_expire
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.storage.base import Repository


def expire(instance: InstanceConfig, repo: Repository,
           dry_run: bool) -> tuple[ExpirePlan, ExpireResult | None]:
    catalog = read_catalog(repo, instance.name)
    plan = plan_expire(catalog, instance.retention, datetime.now(UTC))
    if dry_run or plan.empty:
        return plan, None
    return plan, execute_expire(repo, catalog, plan)
