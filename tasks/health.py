"""Tasks that re-read backups (verify) and check the whole setup (check), for either engine."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from pitrflow.engines.postgres.catalog.verify import VerifyResult, verify
from pitrflow.engines.postgres.health import run_checks
from pitrflow.engines.sqlserver import maintenance as sqlserver
from pitrflow.engines.sqlserver.verify import SqlServerVerifyResult
from pitrflow.errors import PitrError
from pitrflow.health import failed_critical
from pitrflow.storage import open_repository
from tasks.backup import artifact_key
from tasks.runtime import config_for, core_logs_to_run_log


class VerifyFailedError(PitrError):
    code = "verify-failed"
    exit_status = 12


class CheckFailedError(PitrError):
    code = "check-failed"
    exit_status = 13


@task(name="verify-backups", cache_policy=NONE)
def verify_backups(instance: str, backup_id: str | None,
                   config_path: str | None) -> list[dict[str, Any]]:
    config = config_for(config_path)
    settings = config.instance(instance)
    results: Sequence[VerifyResult | SqlServerVerifyResult]
    with core_logs_to_run_log():
        if settings.engine == "sqlserver":
            results = sqlserver.sqlserver_verify(settings, open_repository(config.repository),
                                                 backup_id)
            rows = sqlserver.verify_table(results)
        else:
            results = verify(settings, open_repository(config.repository), backup_id)
            rows = [{"backup": r.backup_id, "result": "ok" if r.ok else "FAILED",
                     "objects": r.objects_checked, "wal segments": r.wal_segments_checked,
                     "pg_verifybackup": r.pg_verifybackup, "problems": "; ".join(r.problems)}
                    for r in results]
    create_table_artifact(table=rows, key=artifact_key("verify", instance),
                          description=f"verify of {instance}")
    bad = [p for r in results for p in r.problems]
    if bad:
        raise VerifyFailedError(f"verify of {instance} found {len(bad)} problem(s): "
                                + "; ".join(bad), "restore from an older backup, or take a "
                                "new full backup; pitr info shows verify status")
    return [r.to_dict() for r in results]


@task(name="check-instance", cache_policy=NONE)
def check_instance(instance: str, config_path: str | None) -> list[dict[str, Any]]:
    config = config_for(config_path)
    settings = config.instance(instance)
    run = sqlserver.sqlserver_check if settings.engine == "sqlserver" else run_checks
    checks = run(settings, open_repository(config.repository), datetime.now(UTC))
    text = "\n".join(c.line() for c in checks)
    create_markdown_artifact(markdown=f"## Check {instance}\n\n```\n{text}\n```\n",
                             key=artifact_key("check", instance),
                             description=f"health check of {instance}")
    if failed_critical(checks):
        failed = [c.name for c in checks if not c.ok and c.critical]
        raise CheckFailedError(f"check of {instance} failed: {', '.join(failed)}",
                               "see the check artifact for the hints")
    return [c.to_dict() for c in checks]
