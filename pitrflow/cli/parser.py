"""The `pitr` command line: backups, WAL, restores, drills and the repository's health.

Each command that does work runs as its Prefect flow when a Prefect server is
configured and answers, so the run shows in the UI, and otherwise runs the
same steps directly: no command waits on the orchestrator, and `restore`
never needs more than the repository, the config and the binaries.  `info`
and `wal-fetch` (PostgreSQL's restore_command) are always plain and fast.
"""

from __future__ import annotations

import argparse

from pitrflow.cli import commands, maintenance

DESCRIPTION = "Point-in-time recovery for PostgreSQL and SQL Server, run as Prefect flows"


def _local_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true",
                        help="run without Prefect even when a server is configured (the run "
                             "does not show in the Prefect UI)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pitr", description=DESCRIPTION)
    parser.add_argument("--config", help="configuration file (default: $PITR_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    backup = sub.add_parser("backup", help="take a base backup")
    backup.add_argument("kind", choices=("full", "incremental"))
    backup.add_argument("instance")
    backup.add_argument("--no-fallback", action="store_true",
                        help="fail instead of taking a full when an incremental is impossible")
    _local_flag(backup)
    backup.set_defaults(func=commands.cmd_backup)

    ship = sub.add_parser("ship", help="ship WAL up to now and record a mark")
    ship.add_argument("instance")
    ship.add_argument("--follow", action="store_true",
                      help="stream WAL continuously until SIGTERM (follow mode)")
    _local_flag(ship)
    ship.set_defaults(func=commands.cmd_ship)

    restore = sub.add_parser("restore", help="restore to a point in time")
    restore.add_argument("instance")
    restore.add_argument("--to", help="ISO 8601 time with offset, or latest")
    restore.add_argument("--target-xid", type=int, help="stop at this transaction's commit")
    restore.add_argument("--target-lsn", help="stop at this log position (0/16B3748)")
    restore.add_argument("--target-name",
                         help="stop at this restore point (pitr mark; SQL Server: a mark)")
    restore.add_argument("--immediate", action="store_true",
                         help="stop at the end of the backup, as soon as it is consistent")
    restore.add_argument("--exclusive", action="store_true",
                         help="stop just before the target instead of just after it")
    restore.add_argument("--target-timeline", help="latest, current or a timeline number")
    restore.add_argument("--delta", action="store_true",
                         help="PostgreSQL: into an existing data directory of the same "
                              "cluster, no server running; rewrite only what differs")
    restore.add_argument("--delta-trust-mtime", action="store_true",
                         help="with --delta: keep files whose size and mtime match, unread")
    restore.add_argument("--standby", action="store_true",
                         help="PostgreSQL: restore a standby that follows the repository "
                              "and the primary; never promoted")
    restore.add_argument("--primary-conninfo",
                         help="with --standby: the primary to stream from, without a "
                              "password (default: the instance itself; off: none)")
    restore.add_argument("--pgdata", help="new or empty data directory (PostgreSQL)")
    restore.add_argument("--name", help="SQL Server: restore under this database name")
    restore.add_argument("--replace", action="store_true",
                         help="SQL Server: allow restoring over an existing database")
    restore.add_argument("--port", type=int, help="port for the restored instance")
    restore.add_argument("--dry-run", action="store_true", help="show the plan only")
    _local_flag(restore)
    restore.set_defaults(func=commands.cmd_restore)

    mark = sub.add_parser("mark", help="create a named restore point and record it")
    mark.add_argument("instance")
    mark.add_argument("--name", required=True, help="the restore point's name (unique)")
    mark.set_defaults(func=commands.cmd_mark)

    drill = sub.add_parser("drill", help="restore to a scratch instance and check it")
    drill.add_argument("instance")
    drill.add_argument("--to", default="random", help="TIME, latest or random (default)")
    drill.add_argument("--keep", action="store_true", help="keep the scratch instance")
    _local_flag(drill)
    drill.set_defaults(func=commands.cmd_drill)

    expire = sub.add_parser("expire", help="apply the retention policy")
    expire.add_argument("instance")
    expire.add_argument("--dry-run", action="store_true", help="show the plan only")
    _local_flag(expire)
    expire.set_defaults(func=commands.cmd_expire)

    verify = sub.add_parser("verify", help="re-read backups and WAL (PostgreSQL: and run "
                                           "pg_verifybackup; SQL Server: and the log chain)")
    verify.add_argument("instance")
    verify.add_argument("--backup", help="one backup id (default: all)")
    _local_flag(verify)
    verify.set_defaults(func=commands.cmd_verify)

    check = sub.add_parser("check", help="one line per health check; non-zero when one fails")
    check.add_argument("instance")
    check.add_argument("--json", action="store_true")
    _local_flag(check)
    check.set_defaults(func=commands.cmd_check)

    repo_cmd = sub.add_parser("repo", help="repository maintenance")
    repo_sub = repo_cmd.add_subparsers(dest="repo_command", required=True)
    cleanup = repo_sub.add_parser("cleanup", help="remove objects no manifest names")
    cleanup.add_argument("instance")
    cleanup.add_argument("--dry-run", action="store_true")
    cleanup.add_argument("--older-than-hours", type=float, default=24.0,
                         help="leave younger objects alone: a backup may still be writing them")
    cleanup.set_defaults(func=maintenance.cmd_repo_cleanup)
    rekey = repo_sub.add_parser("rekey", help="wrap the data keys under a new master key "
                                              "(no data is rewritten; run again to resume)")
    new_key = rekey.add_mutually_exclusive_group(required=True)
    new_key.add_argument("--new-passphrase-env", metavar="VAR",
                         help="environment variable holding the new passphrase")
    new_key.add_argument("--new-passphrase-block", metavar="NAME",
                         help="Prefect Secret block holding the new passphrase")
    new_key.add_argument("--new-kms-key-id", metavar="ID", help="the new AWS KMS key")
    rekey.set_defaults(func=maintenance.cmd_repo_rekey)
    msdb = repo_sub.add_parser(
        "import-msdb", help="SQL Server: store recorded msdb backup history as planning-only "
                           "backups, to see restore plans and T-SQL (--dry-run) before any backup")
    msdb.add_argument("instance")
    msdb.add_argument("recording", help="JSON file: a list of BACKUP_HISTORY_SQL rows, "
                                        "or {\"rows\": [...]}")
    msdb.set_defaults(func=maintenance.cmd_repo_import_msdb)

    deploy = sub.add_parser("deploy", help="register deployments, limits and alerts (idempotent)")
    deploy.add_argument("--pool", default="pitrflow", help="process work pool name")
    deploy.add_argument("--timezone", default="UTC", help="timezone of the cron schedules")
    deploy.add_argument("--notify", help="notification block as <block-type>/<block-name>")
    deploy.add_argument("--worker-root", help="checkout path as the worker sees it")
    deploy.add_argument("--worker-config", help="config path as the worker sees it")
    deploy.set_defaults(func=maintenance.cmd_deploy)

    info = sub.add_parser("info", help="backups, WAL and the recoverable window")
    info.add_argument("instance")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=commands.cmd_info)

    fetch = sub.add_parser("wal-fetch", help="restore_command for PostgreSQL")
    fetch.add_argument("--spool", help="directory of prefetched segments")
    fetch.add_argument("--last", help="newest segment this restore may use")
    fetch.add_argument("instance")
    fetch.add_argument("file", help="%%f")
    fetch.add_argument("dest", help="%%p")
    fetch.set_defaults(func=maintenance.cmd_wal_fetch)
    return parser
