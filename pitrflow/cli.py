"""The `pitr` command.

`backup`, `ship` and `restore` run the same Prefect flows that deployments
run, so their runs show in the Prefect UI (or run on Prefect's ephemeral API
when no server is configured).  `info` and `wal-fetch` are plain and fast:
PostgreSQL calls wal-fetch once per segment, and neither imports Prefect.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pitrflow.config import Config, load_config
from pitrflow.errors import PitrError, UsageError
from pitrflow.times import parse_aware


def parse_target(text: str) -> datetime | None:
    if text == "latest":
        return None
    return parse_aware(text, "--to")


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if getattr(args, "instance", None):
        config.instance(args.instance)  # refuses an unknown instance before anything runs
    if config.repository.encryption and config.repository.encryption.passphrase_block:
        import tasks.runtime  # noqa: F401 - registers the Prefect Secret block resolver
    return config


def _quiet_prefect_tracebacks() -> None:
    """Show a user error as its one line, not as a Prefect traceback."""

    class _Strip(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.exc_info and isinstance(record.exc_info[1], PitrError):
                record.exc_info = None
                record.exc_text = None
            return True

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_Strip())


def _run_flow(module: str, name: str, **params: Any) -> Any:
    import importlib

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    flow = getattr(importlib.import_module(module), name)
    _quiet_prefect_tracebacks()
    return flow(**params)


def cmd_backup(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.kind == "full":
        result = _run_flow("flows.backup_full", "backup_full", instance=args.instance,
                           config_path=str(config.source))
    else:
        result = _run_flow("flows.backup_incremental", "backup_incremental",
                           instance=args.instance, config_path=str(config.source),
                           allow_full_fallback=False if args.no_fallback else None)
    for note in result.get("notes", []):
        print(f"note: {note}")
    print(f"backup {result['id']} ({result['type']}) of {args.instance} complete: "
          f"{result['size_bytes']} bytes stored")
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    config = _config(args)
    result = _run_flow("flows.ship_logs", "ship_logs", instance=args.instance,
                       config_path=str(config.source))
    print(f"shipped {len(result['segments'])} segments of {args.instance}; "
          f"recoverable up to {result['mark_time']} ({result['mark_lsn']})")
    return 0


def _restore_sqlserver(args: argparse.Namespace, config: Config, target: datetime | None) -> int:
    from pitrflow.engines.sqlserver.ops import render, sqlserver_prepare
    from pitrflow.engines.sqlserver.restore import dry_run_script, require_backup_data
    from pitrflow.storage import open_repository

    # Plan before starting a flow: a refusal is one line and changes nothing.
    prepared = sqlserver_prepare(config.instance(args.instance),
                                 open_repository(config.repository), target, args.name,
                                 args.replace)
    print(render(prepared, dry_run_script(prepared)))
    if not args.dry_run:
        require_backup_data(prepared)
    # The same flow a deployment runs, so the run and its artifacts show in the UI.  The
    # name is passed on, so a default name stamped with the time cannot drift by a second.
    result = _run_flow("flows.restore_to_point", "restore_to_point", instance=args.instance,
                       target_time=target, dry_run=args.dry_run,
                       config_path=str(config.source), database_name=prepared.new_name,
                       replace=args.replace)
    if args.dry_run:
        from pitrflow.render import artifact_key

        print("dry run: nothing was changed (plan and T-SQL: artifact "
              f"{artifact_key('restore-plan', args.instance)})")
        return 0
    print(result["connect_hint"])
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    config = _config(args)
    target = parse_target(args.to)
    if config.instance(args.instance).engine == "sqlserver":
        return _restore_sqlserver(args, config, target)
    if not args.pgdata:
        raise UsageError("pitr restore of a PostgreSQL instance needs --pgdata DIR",
                         "pass a new or empty directory for the restored data")
    # Plan and check before starting a flow: a refusal is one line and changes nothing.
    from pitrflow.engines.postgres.catalog.snapshot import read_catalog
    from pitrflow.engines.postgres.render import plan_text
    from pitrflow.engines.postgres.restore.executor import RestoreRequest, preflight
    from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
    from pitrflow.storage import open_repository

    plan = plan_restore(read_catalog(open_repository(config.repository), args.instance),
                        RestoreTarget(target))
    preflight(plan, RestoreRequest(config.instance(args.instance), Path(args.pgdata).absolute(),
                                   args.port, config_file=config.source))
    print(plan_text(plan))
    result = _run_flow("flows.restore_to_point", "restore_to_point", instance=args.instance,
                       pgdata=str(Path(args.pgdata).absolute()), target_time=target,
                       port=args.port, dry_run=args.dry_run, config_path=str(config.source))
    if args.dry_run:
        print("dry run: nothing was changed")
    else:
        print(result["summary"])
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.to not in ("latest", "random"):
        parse_target(args.to)
    result = _run_flow("flows.recovery_drill", "recovery_drill", instance=args.instance,
                       to=args.to, keep=args.keep, config_path=str(config.source))
    if config.instance(args.instance).engine == "sqlserver":
        lag = result["data_lag_seconds"]
        print(f"drill of {args.instance} passed: target {result['target_mode']} "
              f"{result['target'] or '(newest log backup)'}, RTO {result['rto_seconds']:.1f} s, "
              f"data lag {'-' if lag is None else f'{lag:.0f}'} s, "
              f"{result['quality_checked']} expectations checked, scratch database "
              f"{result['scratch_name']} {'kept' if result['kept'] else 'dropped'}")
    else:
        print(f"drill of {args.instance} passed: target {result['target_mode']} "
              f"{result['target_time'] or '(newest mark)'}, RTO {result['rto_seconds']:.1f} s, "
              f"data lag {result['data_lag_seconds']:.0f} s, "
              f"{result['quality_checked']} expectations checked")
    print(f"drill record: {config.repository.location}/{result['record_key']}")
    if result.get("evidence"):
        print(f"evidence (GX data docs): {result['evidence']}")
    if result.get("kept_at"):
        print(f"scratch instance kept at {result['kept_at']}")
    print("artifacts: drill-" + args.instance.lower() + ", drill-checks-"
          + args.instance.lower() + " (Prefect UI, Artifacts)")
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    config = _config(args)
    from pitrflow.storage import open_repository

    settings = config.instance(args.instance)
    repo = open_repository(config.repository)
    if settings.engine == "sqlserver":
        from pitrflow.engines.sqlserver.maintenance import expire_text, sqlserver_expire

        plan, _ = sqlserver_expire(settings, repo, dry_run=True)
        text, empty = expire_text(plan), plan.empty
    else:
        from pitrflow.engines.postgres.catalog.ops import expire
        from pitrflow.engines.postgres.render import expire_text as pg_expire_text

        pg_plan, _ = expire(settings, repo, dry_run=True)
        text, empty = pg_expire_text(pg_plan), pg_plan.empty
    print(text)
    if args.dry_run or empty:
        print("dry run: nothing was deleted" if args.dry_run else "nothing to delete")
        return 0
    outcome = _run_flow("flows.expire", "expire", instance=args.instance,
                        config_path=str(config.source))
    if settings.engine == "sqlserver":
        print(f"deleted {len(outcome['deleted_backups'])} backup sets ({outcome['logs_deleted']} "
              f"of them log backups), {outcome['bytes_freed']} bytes freed")
    else:
        print(f"deleted {len(outcome['deleted_backups'])} backups and {outcome['wal_deleted']} "
              f"WAL segments, {outcome['bytes_freed']} bytes freed")
    for item in outcome.get("locked", []):
        print(f"locked: {item['what']} until {item['locked_until']}; the first expire after "
              "that deletes it")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    config = _config(args)
    results = _run_flow("flows.verify", "verify", instance=args.instance,
                        backup_id=args.backup, config_path=str(config.source))
    if config.instance(args.instance).engine == "sqlserver":
        from pitrflow.engines.sqlserver.maintenance import verify_lines

        print("\n".join(verify_lines(results)))
        return 0
    for r in results:
        print(f"{r['backup_id']}: OK ({r['objects_checked']} objects, "
              f"{r['wal_segments_checked']} WAL segments, pg_verifybackup {r['pg_verifybackup']})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    from datetime import UTC

    from pitrflow.engines.postgres.health import run_checks
    from pitrflow.engines.sqlserver.maintenance import sqlserver_check
    from pitrflow.health import failed_critical, render_lines
    from pitrflow.storage import open_repository

    settings = config.instance(args.instance)
    run = sqlserver_check if settings.engine == "sqlserver" else run_checks
    checks = run(settings, open_repository(config.repository), datetime.now(UTC))
    if args.json:
        print(json.dumps({"instance": args.instance, "ok": not failed_critical(checks),
                          "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        print(render_lines(checks))
    return 1 if failed_critical(checks) else 0


def cmd_repo_import_msdb(args: argparse.Namespace) -> int:
    config = _config(args)
    from pitrflow.engines.sqlserver.ops import sqlserver_import_recorded
    from pitrflow.storage import open_repository

    if config.instance(args.instance).engine != "sqlserver":
        raise UsageError(f"instance {args.instance} is not a SQL Server instance",
                         "import-msdb reads SQL Server backup history")
    ids = sqlserver_import_recorded(args.recording, open_repository(config.repository),
                                    args.instance)
    print(f"imported {len(ids)} backup sets of {args.instance} from {args.recording} "
          "as planning-only backups (restores of them run with --dry-run only)")
    return 0


def cmd_repo_cleanup(args: argparse.Namespace) -> int:
    config = _config(args)
    from datetime import timedelta

    from pitrflow.storage import open_repository
    from pitrflow.storage.cleanup import execute_cleanup, plan_cleanup, plan_lines

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

    deploy_all(str(config.source), pool=args.pool, timezone=args.timezone, notify=args.notify,
               worker_root=args.worker_root, worker_config=args.worker_config)
    print(f"deployments, concurrency limits and alerts registered for "
          f"{', '.join(sorted(config.instances))} on work pool {args.pool}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    config = _config(args)
    from datetime import UTC

    from pitrflow.catalog.verify_records import verify_status
    from pitrflow.drill.record import drill_history
    from pitrflow.engines.postgres.catalog.retention import plan_expire
    from pitrflow.engines.postgres.catalog.snapshot import read_catalog
    from pitrflow.engines.postgres.render import info_dict, info_text
    from pitrflow.render import drill_history_text
    from pitrflow.storage import open_repository

    repo = open_repository(config.repository)
    if config.instance(args.instance).engine == "sqlserver":
        from pitrflow.engines.sqlserver.ops import sqlserver_info

        data = sqlserver_info(config.instance(args.instance), repo)
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(f"instance {args.instance} (SQL Server)")
            if not data["backups"]:
                print("  no backups")
            for b in data["backups"]:
                status = b["verify"]
                verified = ("verified ok" if status and status.get("ok") else
                            "VERIFY FAILED" if status else "not verified")
                print(f"  {b['id']}  {b['type']:<12} {b['database']}  LSN {b['first_lsn']}.."
                      f"{b['last_lsn']}  {b['size_bytes']} bytes  [{verified}]")
            for r in data["rejected"]:
                print(f"  {r['id']}  NOT A BACKUP: {r['reason']}")
            for database, spans in data["restorable"].items():
                if isinstance(spans, dict):
                    print(f"restorable {database}: nothing ({spans['problem']})")
                    continue
                print(f"restorable {database}: " + ", ".join(
                    f"{span['from']} .. {span['to']}" for span in spans))
            print(drill_history_text(drill_history(repo, args.instance)))
        return 0
    catalog = read_catalog(repo, args.instance)
    drills = drill_history(repo, args.instance)
    verify = {b.id: s for b in catalog.backups
              if (s := verify_status(repo, args.instance, b.id)) is not None}
    settings = config.instance(args.instance)
    retention = None
    if settings.retention.enabled:
        plan = plan_expire(catalog, settings.retention, datetime.now(UTC))
        retention = {d.backup_id: (d.keep, d.reason) for d in plan.decisions}
    if args.json:
        data = info_dict(catalog, verify, retention)
        data["drills"] = [d.to_dict() for d in drills]
        print(json.dumps(data, indent=2))
    else:
        print(info_text(catalog, verify, retention))
        print(drill_history_text(drills))
    return 0


def cmd_wal_fetch(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pitr", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="configuration file (default: $PITR_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    backup = sub.add_parser("backup", help="take a base backup")
    backup.add_argument("kind", choices=("full", "incremental"))
    backup.add_argument("instance")
    backup.add_argument("--no-fallback", action="store_true",
                        help="fail instead of taking a full when an incremental is impossible")
    backup.set_defaults(func=cmd_backup)

    ship = sub.add_parser("ship", help="ship WAL up to now and record a mark")
    ship.add_argument("instance")
    ship.set_defaults(func=cmd_ship)

    restore = sub.add_parser("restore", help="restore to a point in time")
    restore.add_argument("instance")
    restore.add_argument("--to", required=True, help="ISO 8601 time with offset, or latest")
    restore.add_argument("--pgdata", help="new or empty data directory (PostgreSQL)")
    restore.add_argument("--name", help="SQL Server: restore under this database name")
    restore.add_argument("--replace", action="store_true",
                         help="SQL Server: allow restoring over an existing database")
    restore.add_argument("--port", type=int, help="port for the restored instance")
    restore.add_argument("--dry-run", action="store_true", help="show the plan only")
    restore.set_defaults(func=cmd_restore)

    drill = sub.add_parser("drill", help="restore to a scratch instance and check it")
    drill.add_argument("instance")
    drill.add_argument("--to", default="random", help="TIME, latest or random (default)")
    drill.add_argument("--keep", action="store_true", help="keep the scratch instance")
    drill.set_defaults(func=cmd_drill)

    expire = sub.add_parser("expire", help="apply the retention policy")
    expire.add_argument("instance")
    expire.add_argument("--dry-run", action="store_true", help="show the plan only")
    expire.set_defaults(func=cmd_expire)

    verify = sub.add_parser("verify", help="re-read backups and WAL (PostgreSQL: and run "
                                           "pg_verifybackup; SQL Server: and the log chain)")
    verify.add_argument("instance")
    verify.add_argument("--backup", help="one backup id (default: all)")
    verify.set_defaults(func=cmd_verify)

    check = sub.add_parser("check", help="one line per health check; non-zero when one fails")
    check.add_argument("instance")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_check)

    repo_cmd = sub.add_parser("repo", help="repository maintenance")
    repo_sub = repo_cmd.add_subparsers(dest="repo_command", required=True)
    cleanup = repo_sub.add_parser("cleanup", help="remove objects no manifest names")
    cleanup.add_argument("instance")
    cleanup.add_argument("--dry-run", action="store_true")
    cleanup.add_argument("--older-than-hours", type=float, default=24.0,
                         help="leave younger objects alone: a backup may still be writing them")
    cleanup.set_defaults(func=cmd_repo_cleanup)
    rekey = repo_sub.add_parser("rekey", help="wrap the data keys under a new master key "
                                              "(no data is rewritten; run again to resume)")
    new_key = rekey.add_mutually_exclusive_group(required=True)
    new_key.add_argument("--new-passphrase-env", metavar="VAR",
                         help="environment variable holding the new passphrase")
    new_key.add_argument("--new-passphrase-block", metavar="NAME",
                         help="Prefect Secret block holding the new passphrase")
    new_key.add_argument("--new-kms-key-id", metavar="ID", help="the new AWS KMS key")
    rekey.set_defaults(func=cmd_repo_rekey)
    msdb = repo_sub.add_parser(
        "import-msdb", help="SQL Server: store recorded msdb backup history as planning-only "
                           "backups, to see restore plans and T-SQL (--dry-run) before any backup")
    msdb.add_argument("instance")
    msdb.add_argument("recording", help="JSON file: a list of BACKUP_HISTORY_SQL rows, "
                                        "or {\"rows\": [...]}")
    msdb.set_defaults(func=cmd_repo_import_msdb)

    deploy = sub.add_parser("deploy", help="register deployments, limits and alerts (idempotent)")
    deploy.add_argument("--pool", default="pitrflow", help="process work pool name")
    deploy.add_argument("--timezone", default="UTC", help="timezone of the cron schedules")
    deploy.add_argument("--notify", help="notification block as <block-type>/<block-name>")
    deploy.add_argument("--worker-root", help="checkout path as the worker sees it")
    deploy.add_argument("--worker-config", help="config path as the worker sees it")
    deploy.set_defaults(func=cmd_deploy)

    info = sub.add_parser("info", help="backups, WAL and the recoverable window")
    info.add_argument("instance")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    fetch = sub.add_parser("wal-fetch", help="restore_command for PostgreSQL")
    fetch.add_argument("--spool", help="directory of prefetched segments")
    fetch.add_argument("--last", help="newest segment this restore may use")
    fetch.add_argument("instance")
    fetch.add_argument("file", help="%%f")
    fetch.add_argument("dest", help="%%p")
    fetch.set_defaults(func=cmd_wal_fetch)
    return parser


class _ArgumentParserExit(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Flow runs forward pitrflow's log lines to Prefect's run logger (and its
    # console); only warnings from the plain commands reach stderr directly.
    logging.getLogger("pitrflow").setLevel(logging.INFO)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except PitrError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
