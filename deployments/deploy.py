"""Register everything for the configured instances: the body of `pitr deploy`.

Three steps, each safe to repeat: apply the setup (work pool and queues,
limits, block types, the fleet's automations) so no scheduled run can start
before its limits exist; register the deployments through Prefect's API
(deployments.register: only what differs, and the deployments of instances
no longer configured are removed); then tell the alerts which instances to
watch (a `pitrflow.instance.deployed` event each, `pitrflow.instance.removed`
for the removed).  It needs a running Prefect server: deployments registered
with the ephemeral API would vanish with it, so that is refused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from deployments.desired import PROJECT_ROOT, desired_deployments
from deployments.register import RegisterReport, parameter_schemas, register
from deployments.setup import remove_limits, require_server, setup
from deployments.specs import DEFAULT_POOL, DEFAULT_TIMEZONE
from pitrflow.config import Config, load_config
from pitrflow.errors import PitrError


def removed_instances(config: Config, report: RegisterReport) -> list[str]:
    """Instances whose deployments this deploy removed and the config no longer names."""
    return sorted({key.partition("/")[2] for key in report.removed} - set(config.instances))


def _announce(config: Config, removed: list[str]) -> None:
    """Open a silence window for every configured instance not yet watched, and close
    those of removed instances (see deployments.alerts)."""
    from prefect.events.worker import EventsWorker

    from tasks import events

    for name in sorted(config.instances):
        events.instance_deployed(name, config.instances[name].engine)
    for name in removed:
        events.instance_removed(name)
    EventsWorker.drain_all()


def deploy_all(config_path: str | None, pool: str = DEFAULT_POOL,
               timezone: str = DEFAULT_TIMEZONE, *, notify: str | None = None,
               worker_root: str | None = None,
               worker_config: str | None = None) -> list[str]:
    """Apply the setup, register every deployment, announce the instances; say what it did.

    The flows are imported from this checkout for their parameter schemas;
    `worker_root` and `worker_config` say where the worker finds the checkout
    and the config when that is elsewhere (the container image, a ConfigMap).
    """
    from prefect.client.orchestration import get_client

    require_server()
    started = time.monotonic()
    config = load_config(config_path)
    wanted = desired_deployments(config, pool=pool, timezone=timezone,
                                 project_root=Path(worker_root) if worker_root else PROJECT_ROOT,
                                 worker_config=worker_config)
    done = setup(config_path, pool, notify)
    with get_client(sync_client=True) as client:
        report = register(client, wanted, parameter_schemas(), pool)
        removed = removed_instances(config, report)
        limits = remove_limits(client, removed)
    _announce(config, removed)
    done += report.lines()
    done.append(f"instances removed: {', '.join(removed) or 'none'} "
                f"({len(limits)} concurrency limits removed)")
    done.append(f"{len(config.instances)} instances in {time.monotonic() - started:.1f} s")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.deploy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="pitrflow config (default: $PITR_CONFIG)")
    parser.add_argument("--pool", default=DEFAULT_POOL)
    parser.add_argument("--timezone", default=DEFAULT_TIMEZONE)
    parser.add_argument("--notify", help="notification block as <block-type>/<block-name>")
    parser.add_argument("--worker-root",
                        help="where the worker finds this checkout (default: here)")
    parser.add_argument("--worker-config",
                        help="config path as the worker sees it (default: --config)")
    args = parser.parse_args(argv)
    try:
        done = deploy_all(args.config, args.pool, args.timezone, notify=args.notify,
                          worker_root=args.worker_root, worker_config=args.worker_config)
    except PitrError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_status
    print("\n".join(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
