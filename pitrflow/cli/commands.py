"""What each `pitr` command does: the same work as a flow run, or the same steps directly.

A command runs as its Prefect flow when a server is configured and answers
(so the run shows in the UI), and otherwise calls the same core steps itself
(pitrflow.local), printing the same outcome and writing the same records.
Only the engine protocol is called: no command knows which database engine an
instance runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pitrflow import local
from pitrflow.config import Config, load_config
from pitrflow.engines.base import RestoreDestination, RestoreTarget, tablespace_pairs
from pitrflow.errors import CheckFailedError, UsageError
from pitrflow.orchestrator import RunMode, Urgency, choose_run_mode
from pitrflow.times import parse_aware


def parse_target(text: str) -> RestoreTarget:
    return RestoreTarget(None if text == "latest" else parse_aware(text, "--to"))


def restore_target(args: argparse.Namespace) -> RestoreTarget:
    """The one target the restore flags name (`--to latest` when only --exclusive or a
    timeline is given is refused by RestoreTarget itself)."""
    kinds = [args.to is not None, args.target_xid is not None, args.target_lsn is not None,
             args.target_name is not None, args.immediate]
    if not any(kinds):
        raise UsageError("pitr restore needs a target",
                         "give --to TIME|latest, --target-xid, --target-lsn, --target-name "
                         "or --immediate")
    time = parse_aware(args.to, "--to") if args.to not in (None, "latest") else None
    if args.to == "latest" and sum(kinds) > 1:
        raise UsageError("a restore has one target, got --to latest and another",
                         "give one target")
    return RestoreTarget(time=time, xid=args.target_xid, lsn=args.target_lsn,
                         name=args.target_name, immediate=args.immediate,
                         exclusive=args.exclusive, timeline=args.target_timeline)


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    encryption = config.repository.encryption
    if encryption and encryption.passphrase_block:
        import tasks.runtime  # noqa: F401 - registers the Prefect Secret block resolver
    if getattr(args, "instance", None):
        config.instance(args.instance)  # refuses an unknown instance before anything runs
    return config


class _StderrLines(logging.Handler):
    """The core's log lines on whatever sys.stderr is when they come (tests swap it).

    On a terminal that also shows a progress bar, each line first clears the bar's
    line, and progress lines are left to the bar, so nothing shows twice."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def emit(self, record: logging.LogRecord) -> None:
        if self.tty and record.name == "pitrflow.progress":
            return
        try:
            text = self.format(record)
            stream = sys.stderr
            stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never fail the command
            self.handleError(record)


def log_to_stderr() -> None:
    """The core's log lines on stderr, once each, and a progress bar on a terminal: only
    when no flow run forwards them to Prefect's console already."""
    core = logging.getLogger("pitrflow")
    core.setLevel(logging.INFO)
    if any(getattr(h, "pitrflow_cli", False) for h in core.handlers):
        return
    tty = sys.stderr.isatty()
    handler = _StderrLines(tty)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.pitrflow_cli = True  # type: ignore[attr-defined]
    core.addHandler(handler)
    core.propagate = False
    if tty:
        from pitrflow.progress import progress_sink, terminal_bar

        # For the rest of this command: the CLI process ends with it.
        progress_sink(terminal_bar(sys.stderr)).__enter__()


def _mode(args: argparse.Namespace, urgency: Urgency) -> RunMode:
    mode = choose_run_mode(urgency, getattr(args, "local", False))
    if mode.note:
        print(mode.note, file=sys.stderr)
    if mode.use_prefect:
        from pitrflow.cli.flowrun import load_block_resolvers

        load_block_resolvers()
    else:
        log_to_stderr()
    return mode


def _flow(module: str, name: str, kind: str, args: argparse.Namespace, config: Config,
          **params: Any) -> Any:
    from pitrflow.cli.flowrun import run_flow

    return run_flow(f"flows.{module}", name, kind=kind, instance=args.instance,
                    config_path=str(config.source), **params)


def _artifacts(*kinds: str, instance: str) -> str:
    from pitrflow.render import artifact_key

    return ("artifacts: " + ", ".join(artifact_key(k, instance) for k in kinds)
            + " (Prefect UI, Artifacts)")


def cmd_backup(args: argparse.Namespace) -> int:
    config = _config(args)
    allow = False if args.no_fallback else None
    if _mode(args, "scheduled").use_prefect:
        if args.kind == "full":
            result = _flow("backup_full", "backup_full", "backup", args, config)
        else:
            result = _flow("backup_incremental", "backup_incremental", "backup", args, config,
                           allow_full_fallback=allow)
        print(result["summary"])
        print(_artifacts("backup", instance=args.instance))
        return 0
    print(local.backup(config, args.instance, args.kind, allow).text)
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.follow:  # a long-running service: the core follower, never a Prefect flow
        from pitrflow.engines.registry import engine_for
        from pitrflow.storage import open_repository

        log_to_stderr()
        print(engine_for(config, args.instance).follow(open_repository(config.repository)).text)
        return 0
    if _mode(args, "scheduled").use_prefect:
        print(_flow("ship_logs", "ship_logs", "ship", args, config)["summary"])
        return 0
    print(local.ship(config, args.instance).text)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    config = _config(args)
    target = restore_target(args)
    destination = RestoreDestination(
        pgdata=str(Path(args.pgdata).absolute()) if args.pgdata else "", port=args.port,
        database_name=args.name, replace=args.replace, standby=args.standby,
        primary_conninfo=args.primary_conninfo, delta=args.delta or args.delta_trust_mtime,
        delta_trust_mtime=args.delta_trust_mtime,
        tablespace_map=tuple((key, str(Path(d).absolute()))
                             for key, d in tablespace_pairs(args.tablespace_map)),
        tablespace_map_all=(str(Path(args.tablespace_map_all).absolute())
                            if args.tablespace_map_all else None),
        db_include=tuple(args.db_include or ()))
    mode = _mode(args, "restore")
    # Plan and check first, whichever way it runs: a refusal is one line and changes nothing.
    plan = local.plan_restore(config, args.instance, target, destination)
    print(plan.text)
    if mode.use_prefect:
        result = _flow("restore_to_point", "restore_to_point", "restore", args, config,
                       dry_run=args.dry_run, **target.flow_parameters(),
                       **plan.destination.flow_parameters())
        if not args.dry_run:
            print(result["summary"])
    elif not args.dry_run:
        print(local.restore(config, plan).text)
    if args.dry_run:
        print("dry run: nothing was changed")
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.to not in ("latest", "random"):
        parse_target(args.to)
    if _mode(args, "scheduled").use_prefect:
        result = _flow("recovery_drill", "recovery_drill", "drill", args, config, to=args.to,
                       keep=args.keep)
        print(result["summary"])
        print(_artifacts("drill", "drill-checks", instance=args.instance))
        return 0
    outcome = local.drill(config, args.instance, args.to, args.keep)
    failure = outcome.failure()
    if failure is not None:
        raise failure
    print(outcome.text)
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    config = _config(args)
    mode = _mode(args, "scheduled")
    plan = local.plan_expire(config, args.instance)
    print(plan.text)
    if args.dry_run or plan.empty:
        print("dry run: nothing was deleted" if args.dry_run else "nothing to delete")
        return 0
    if mode.use_prefect:
        print(_flow("expire", "expire", "expire", args, config)["summary"])
        return 0
    from pitrflow.engines.registry import engine_for
    from pitrflow.storage import open_repository

    engine = engine_for(config, args.instance)
    print(engine.expire(open_repository(config.repository), plan).text)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    config = _config(args)
    if _mode(args, "restore").use_prefect:
        from pitrflow.engines.registry import engine_for

        results = _flow("verify", "verify", "verify", args, config, backup_id=args.backup)
        print(engine_for(config, args.instance).verify_text(results))
        return 0
    report = local.verify(config, args.instance, args.backup)
    print(report.text)
    failure = report.failure()
    if failure is not None:
        raise failure
    return 0


def _print_checks(instance: str, checks: list[dict[str, Any]], as_json: bool) -> None:
    from pitrflow.health import Check, failed_critical, render_lines

    parsed = [Check(**c) for c in checks]
    if as_json:
        print(json.dumps({"instance": instance, "ok": not failed_critical(parsed),
                          "checks": checks}, indent=2))
    else:
        print(render_lines(parsed))


def cmd_check(args: argparse.Namespace) -> int:
    """Like `barman check`: every line, and a non-zero exit when a critical check fails."""
    config = _config(args)
    if _mode(args, "scheduled").use_prefect:
        try:
            checks = _flow("check", "check", "check", args, config)
        except CheckFailedError as exc:
            _print_checks(args.instance, exc.details or [], args.json)
            return 1
        _print_checks(args.instance, checks, args.json)
        return 0
    report = local.check(config, args.instance)
    _print_checks(args.instance, report.data["checks"], args.json)
    return 1 if report.failed else 0


def cmd_mark(args: argparse.Namespace) -> int:
    """A named restore point, recorded in the repository (no flow: one statement)."""
    from pitrflow.engines.registry import engine_for
    from pitrflow.storage import open_repository

    config = _config(args)
    log_to_stderr()
    engine = engine_for(config, args.instance)
    print(engine.mark(open_repository(config.repository), args.name).text)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from pitrflow.engines.registry import engine_for
    from pitrflow.storage import open_repository

    config = _config(args)
    outcome = engine_for(config, args.instance).info(open_repository(config.repository))
    print(json.dumps(outcome.data, indent=2) if args.json else outcome.text)
    return 0
