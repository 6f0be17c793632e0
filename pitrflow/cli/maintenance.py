"""`pitr` commands that look after the repository and the orchestrator, and PostgreSQL's
restore_command.  None of them runs as a flow."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

from pitrflow.cli.commands import _config
from pitrflow.config import load_config
from pitrflow.errors import PitrError


def cmd_repo_import_msdb(args: argparse.Namespace) -> int:
    from pitrflow.engines.registry import engine_for
    from pitrflow.storage import open_repository

    config = _config(args)
    engine = engine_for(config, args.instance)
    print(engine.import_history(open_repository(config.repository), args.recording).text)
    return 0


def cmd_repo_cleanup(args: argparse.Namespace) -> int:
    from pitrflow.storage import open_repository
    from pitrflow.storage.cleanup import execute_cleanup, plan_cleanup, plan_lines

    config = _config(args)
    repo = open_repository(config.repository)
    plan = plan_cleanup(repo, args.instance, older_than=timedelta(hours=args.older_than_hours))
    print("\n".join(plan_lines(plan)))
    if args.dry_run or plan.empty:
        print("dry run: nothing was removed" if args.dry_run else "nothing to remove")
        return 0
    result = execute_cleanup(repo, plan)
    print(f"removed {len(result.removed)} objects, aborted {len(result.aborted)} uploads"
          + (f", {len(result.failed)} failed" if result.failed else ""))
    return 1 if result.failed else 0


def cmd_repo_rekey(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.new_passphrase_block:
        import tasks.runtime  # noqa: F401 - registers the Prefect Secret block resolver
    from pitrflow.storage.rekey import rekey_lines, rekey_repository

    result = rekey_repository(config.repository, passphrase_env=args.new_passphrase_env,
                              passphrase_block=args.new_passphrase_block,
                              kms_key_id=args.new_kms_key_id)
    new = (f"passphrase_env = \"{args.new_passphrase_env}\"" if args.new_passphrase_env else
           f"passphrase_block = \"{args.new_passphrase_block}\"" if args.new_passphrase_block
           else f"kms_key_id = \"{args.new_kms_key_id}\"")
    print("\n".join(rekey_lines(result, new)))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    config = _config(args)
    from deployments.deploy import deploy_all

    done = deploy_all(str(config.source), pool=args.pool, timezone=args.timezone,
                      notify=args.notify, worker_root=args.worker_root,
                      worker_config=args.worker_config)
    print("\n".join(done))
    return 0


def cmd_wal_fetch(args: argparse.Namespace) -> int:
    """PostgreSQL's restore_command: called once per segment, so it stays small and fast."""
    from pitrflow.engines.postgres.wal.walfetch import FATAL, wal_fetch

    repo = None
    try:
        if args.config or os.environ.get("PITR_CONFIG"):
            from pitrflow.storage import open_repository

            config = load_config(args.config)
            encryption = config.repository.encryption
            if config.repository.credentials_block or (encryption and encryption.passphrase_block):
                import tasks.runtime  # noqa: F401 - registers the Prefect block resolvers
            repo = open_repository(config.repository)
        return wal_fetch(repo, args.instance, args.file, Path(args.dest),
                         spool=Path(args.spool) if args.spool else None, last=args.last)
    except PitrError as exc:
        print(exc.one_line(), file=sys.stderr)
        return FATAL
