"""Create, or bring back in line, what the deployments rely on in the Prefect server.

- the `process` work pool the deployments name;
- one global concurrency limit of 1 per instance for backups (full and
  incremental share it) and one for ship runs: the flows hold them strictly,
  so a deployment run before this step fails instead of overlapping;
- the automations of `deployments.alerts`, optionally sending through a
  notification block (Slack, e-mail, a webhook...).

Running it again changes nothing that is already right: limits are matched by
name, automations by name and updated in place (keeping a pause set in the UI,
and their notification routing when no --notify is given), and
pitrflow-managed automations of instances no longer in the config are removed.

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
from prefect.exceptions import ObjectNotFound

from deployments.alerts import DEFAULT_BACKUP_MARGIN, MANAGED_TAG, desired_automations
from deployments.generate import check_name
from deployments.specs import DEFAULT_POOL
from flows._limits import KINDS, limit_name
from pitrflow.config import load_config
from pitrflow.errors import PitrError, UsageError


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


def ensure_limit(client: SyncPrefectClient, name: str, limit: int = 1) -> None:
    """Make the limit NAME exist, active, with LIMIT slots."""
    try:
        found = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True))
        return
    if found.limit != limit or not found.active:
        client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))


def instance_limits(instances: list[str]) -> list[str]:
    return [limit_name(kind, instance) for instance in sorted(instances) for kind in KINDS]


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


def apply_automations(client: SyncPrefectClient, wanted: list[AutomationCore],
                      keep_routing: bool = False) -> list[str]:
    """Create or update each wanted automation by name; drop stale managed ones.

    With `keep_routing` (no --notify given), an alert that already sends
    somewhere keeps its actions: running `pitr deploy` again without the flag
    must not silently turn the pager off.
    """
    existing = client.read_automations()
    names = {automation.name for automation in wanted}
    for automation in wanted:
        same = [found for found in existing if found.name == automation.name]
        if not same:
            client.create_automation(automation)
            continue
        # Whoever paused an alert in the UI meant it: keep its enabled flag.
        update: dict[str, Any] = {"enabled": same[0].enabled}
        if keep_routing and any(action.type != "do-nothing" for action in same[0].actions):
            update["actions"] = same[0].actions
        client.update_automation(same[0].id, automation.model_copy(update=update))
        for duplicate in same[1:]:
            client.delete_automation(duplicate.id)
    for found in existing:
        if MANAGED_TAG in found.tags and found.name not in names:
            client.delete_automation(found.id)
    return sorted(names)


def setup(config_path: str | None, pool: str = DEFAULT_POOL, notify: str | None = None,
          backup_margin: timedelta = DEFAULT_BACKUP_MARGIN) -> list[str]:
    """Apply pool, limits and automations for every configured instance; say what exists."""
    require_server()
    config = load_config(config_path)
    instances = sorted(config.instances)
    check_name("work pool", pool)
    done: list[str] = []
    with get_client(sync_client=True) as client:
        ensure_work_pool(client, pool)
        done.append(f"work pool {pool} (process)")
        for name in instance_limits(instances):
            ensure_limit(client, name)
            done.append(f"concurrency limit {name} = 1")
        block = resolve_notify_block(client, notify) if notify else None
        wanted = desired_automations(instances, block, backup_margin)
        applied = apply_automations(client, wanted, keep_routing=block is None)
        done += [f"automation {name!r}" for name in applied]
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
