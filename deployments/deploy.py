"""Register everything for the configured instances: the body of `pitr deploy`.

Three steps, each safe to repeat: write prefect.yaml from the config, apply
the setup (work pool, limits, alerts) so no scheduled run can start before
its limits exist, then `prefect --no-prompt deploy --all`, which updates
deployments in place by name.  It needs a running Prefect server: deployments
registered with the ephemeral API would vanish with it, so that is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deployments.generate import PROJECT_ROOT, write_prefect_yaml
from deployments.setup import require_server, setup
from deployments.specs import DEFAULT_POOL, DEFAULT_TIMEZONE
from pitrflow import procs
from pitrflow.errors import CommandFailedError, PitrError


def deploy_all(config_path: str | None, pool: str = DEFAULT_POOL,
               timezone: str = DEFAULT_TIMEZONE, *, notify: str | None = None,
               prefect_file: Path | None = None, worker_root: str | None = None,
               worker_config: str | None = None) -> None:
    """Generate prefect.yaml, apply the setup, and register every deployment.

    `prefect deploy` imports the flows from this checkout, so it runs here;
    `worker_root` and `worker_config` say where the worker finds the checkout
    and the config when that is elsewhere (the container image, a ConfigMap).
    `prefect_file` defaults to prefect.yaml in this checkout.
    """
    api_url = require_server()
    target = prefect_file or PROJECT_ROOT / "prefect.yaml"
    write_prefect_yaml(config_path, target, pool=pool, timezone=timezone,
                       project_root=Path(worker_root) if worker_root else PROJECT_ROOT,
                       worker_config=worker_config)
    for line in setup(config_path, pool, notify):
        print(line)
    result = procs.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
                        "--prefect-file", str(target)],
                       cwd=PROJECT_ROOT, env={"PREFECT_API_URL": api_url}, check=False,
                       what="prefect deploy", line_sink=lambda line: print(line, file=sys.stderr))
    output = result.stdout_text
    print(output, end="")
    if result.returncode != 0:
        lines = [line.strip() for line in output.splitlines() + result.stderr_tail
                 if line.strip()]
        raise CommandFailedError(f"prefect deploy failed: {lines[-1] if lines else 'no output'}",
                                 f"run `prefect deploy --all --prefect-file {target}` from "
                                 f"{PROJECT_ROOT} to see the whole story")


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
        deploy_all(args.config, args.pool, args.timezone, notify=args.notify,
                   worker_root=args.worker_root, worker_config=args.worker_config)
    except PitrError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
