"""Create, or bring back in line, what the deployments rely on in the Prefect server.

- the `process` work pool the deployments name, with a `restores` queue at
  priority 1, so a restore someone waits for is picked before the night's
  backups;
- one global concurrency limit of 1 per instance for backups (full and
  incremental share it) and one for ship runs: the flows hold them strictly,
  so a deployment run before this step fails instead of overlapping;
- the block types of tasks/blocks.py (an instance's `connection_block`);
- the fleet's automations (deployments.alerts), optionally sending through a
  notification block (Slack, e-mail, a webhook...).

Running it again changes nothing that is already right: limits are matched by
name (`pitr deploy` removes those of the instances whose deployments it removed),
automations by name and left untouched when they already say the same (an
update would restart every instance's silence window), updated in place
otherwise, keeping a pause set in the UI and their notification routing when
no --notify is given; pitrflow-managed automations it no longer wants (the
per-instance ones of earlier versions among them) are removed.

    python -m deployments.setup --config pitrflow.toml [--notify slack-webhook/pitrflow-alerts]
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.automations import AutomationCore
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
)
from prefect.client.schemas.objects import GlobalConcurrencyLimit
from prefect.exceptions import ObjectNotFound

from deployments.alerts import DEFAULT_BACKUP_MARGIN, desired_automations
from deployments.desired import MANAGED_TAG, check_name
from deployments.specs import DEFAULT_POOL, RESTORE_QUEUE
from flows._limits import KINDS, limit_name
from pitrflow.config import load_config
from pitrflow.errors import PitrError, UsageError

_PAGE = 200


def require_server() -> str:
    """The API URL; refuse the ephemeral API, where everything set up would vanish with it."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise UsageError("PREFECT_API_URL is not set: deployments need a running Prefect server",
                         "start one (infra/host/run-server-and-worker.sh) and "
                         "export PREFECT_API_URL=http://HOST:4200/api")
    return str(url)


def ensure_work_pool(client: SyncPrefectClient, pool: str) -> None:
    try:
        found = client.read_work_pool(pool)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        return
    if found.type != "process":
        raise UsageError(f"work pool {pool!r} exists with type {found.type!r}, not 'process'",
                         "pass --pool with another name, or delete that pool")


def ensure_restore_queue(client: SyncPrefectClient, pool: str) -> None:
    """The restores queue, first in the pool's order (Prefect shifts the others down)."""
    try:
        queue = client.read_work_queue_by_name(RESTORE_QUEUE, work_pool_name=pool)
    except ObjectNotFound:
        client.create_work_queue(RESTORE_QUEUE, work_pool_name=pool, priority=1,
                                 description="Restores: picked before any other pitrflow run.")
        return
    if queue.priority != 1:
        client.update_work_queue(queue.id, priority=1)


def instance_limits(instances: list[str]) -> list[str]:
    return [limit_name(kind, instance) for instance in sorted(instances) for kind in KINDS]


def read_limits(client: SyncPrefectClient) -> list[GlobalConcurrencyLimit]:
    found: list[GlobalConcurrencyLimit] = []
    while True:
        page = client.read_global_concurrency_limits(limit=_PAGE, offset=len(found))
        found += page
        if len(page) < _PAGE:
            return found


def sync_limits(client: SyncPrefectClient, instances: list[str]) -> int:
    """Make every instance's limits exist with one active slot; returns how many."""
    wanted = set(instance_limits(instances))
    existing = {limit.name: limit for limit in read_limits(client)}
    for name in sorted(wanted):
        found = existing.get(name)
        if found is None:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1, active=True))
        elif found.limit != 1 or not found.active:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, active=True))
    return len(wanted)


def remove_limits(client: SyncPrefectClient, instances: list[str]) -> list[str]:
    """Delete the limits of INSTANCES (removed from the config) that no run holds now;
    a slot still held belongs to a run in progress, and the next deploy removes it."""
    existing = {limit.name: limit for limit in read_limits(client)}
    removed = []
    for name in instance_limits(instances):
        found = existing.get(name)
        if found is not None and not found.active_slots:
            client.delete_global_concurrency_limit_by_name(name)
            removed.append(name)
    return removed


def register_block_types(client: SyncPrefectClient) -> list[str]:
    from tasks.blocks import CONNECTION_BLOCKS

    for block in CONNECTION_BLOCKS:
        block.register_type_and_schema(client=client)
    return [block.get_block_type_slug() for block in CONNECTION_BLOCKS]


def resolve_notify_block(client: SyncPrefectClient, notify: str) -> UUID:
    """`<block-type-slug>/<block-name>` (as `prefect block ls` shows it) to its id."""
    slug, _, name = notify.partition("/")
    if not slug or not name:
        raise UsageError(f"--notify {notify!r} is not <block-type>/<block-name>",
                         "e.g. slack-webhook/pitrflow-alerts; see `prefect block ls`")
    try:
        return client.read_block_document_by_name(name=name, block_type_slug=slug).id
    except ObjectNotFound:
        raise UsageError(f"notification block {notify} does not exist",
                         "create it in the UI (Blocks) or with Block.save(), then run "
                         "setup again") from None


def _comparable(value: Any) -> Any:
    """JSON with every list of plain values sorted: sets (expect, after) have no order."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_comparable(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


def _same(found: AutomationCore, wanted: AutomationCore) -> bool:
    fields = {"name", "description", "tags", "trigger", "actions", "actions_on_trigger",
              "actions_on_resolve", "enabled"}
    return bool(_comparable(found.model_dump(mode="json", include=fields))
                == _comparable(wanted.model_dump(mode="json", include=fields)))


def apply_automations(client: SyncPrefectClient, wanted: list[AutomationCore],
                      keep_routing: bool = False) -> dict[str, str]:
    """Create or update each wanted automation by name; drop stale managed ones.

    Returns what happened to each wanted one: created, updated or unchanged.
    With `keep_routing` (no --notify given), an alert that already sends
    somewhere keeps its actions: running `pitr deploy` again without the flag
    must not silently turn the pager off.
    """
    existing = client.read_automations()
    names = {automation.name for automation in wanted}
    done = {}
    for automation in wanted:
        same = [found for found in existing if found.name == automation.name]
        for duplicate in same[1:]:
            client.delete_automation(duplicate.id)
        if not same:
            client.create_automation(automation)
            done[automation.name] = "created"
            continue
        # Whoever paused an alert in the UI meant it: keep its enabled flag.
        update: dict[str, Any] = {"enabled": same[0].enabled}
        if keep_routing and any(action.type != "do-nothing" for action in same[0].actions):
            update["actions"] = same[0].actions
        target = automation.model_copy(update=update)
        if _same(same[0], target):
            done[automation.name] = "unchanged"
        else:
            client.update_automation(same[0].id, target)
            done[automation.name] = "updated"
    for found in existing:
        if MANAGED_TAG in found.tags and found.name not in names:
            client.delete_automation(found.id)
            done[found.name] = "removed"
    return done


def setup(config_path: str | None, pool: str = DEFAULT_POOL, notify: str | None = None,
          backup_margin: timedelta = DEFAULT_BACKUP_MARGIN) -> list[str]:
    """Apply pool, queue, limits, block types and automations; say what exists."""
    require_server()
    config = load_config(config_path)
    instances = sorted(config.instances)
    check_name("work pool", pool)
    done: list[str] = []
    with get_client(sync_client=True) as client:
        ensure_work_pool(client, pool)
        ensure_restore_queue(client, pool)
        done.append(f"work pool {pool} (process), queue {RESTORE_QUEUE} at priority 1")
        done.append(f"concurrency limits: {sync_limits(client, instances)} in place "
                    "(1 slot each)")
        done.append("block types: " + ", ".join(register_block_types(client)))
        block = resolve_notify_block(client, notify) if notify else None
        wanted = desired_automations(block, backup_margin)
        applied = apply_automations(client, wanted, keep_routing=block is None)
        done += [f"automation {name!r}: {what}" for name, what in sorted(applied.items())]
    if block is None:
        done.append("note: no --notify: existing alert routing is kept; new alerts show "
                    "in the UI's event feed only")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.setup",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="pitrflow config (default: $PITR_CONFIG)")
    parser.add_argument("--pool", default=DEFAULT_POOL)
    parser.add_argument("--notify", help="notification block as <block-type>/<block-name>")
    parser.add_argument("--backup-margin-hours", type=float,
                        default=DEFAULT_BACKUP_MARGIN.total_seconds() / 3600,
                        help="slack after the 6-hour backup interval before alerting")
    args = parser.parse_args(argv)
    try:
        done = setup(args.config, args.pool, args.notify,
                     timedelta(hours=args.backup_margin_hours))
    except PitrError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_status
    print("\n".join(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
