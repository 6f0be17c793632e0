"""The events pitrflow's tasks emit, with the database instance as the resource.

Prefect's own flow-run events name a flow run; these name the instance, so one
automation can watch every instance at once (`for_each` on the resource id)
instead of one automation per instance.  Each event carries what an alert
or a dashboard wants to show (sizes, lag, RTO) in its payload, and Prefect
attaches the flow run, flow, deployment and tags as related resources.

Events are emitted by the tasks after the engine call succeeded (or, for a
drill or a check, after its verdict), never by the core: a run without Prefect
has no one to tell.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from pitrflow.engines.base import BackupResult, CheckReport, DrillResult, ShipResult

RESOURCE_PREFIX = "pitrflow.instance."
BACKUP_COMPLETED = "pitrflow.backup.completed"
WAL_SHIPPED = "pitrflow.wal.shipped"
DRILL_PASSED = "pitrflow.drill.passed"
DRILL_FAILED = "pitrflow.drill.failed"
CHECK_FAILED = "pitrflow.check.failed"
# Emitted by `pitr deploy` for every configured instance: it opens a silence window
# for an instance not yet watched, so one that never succeeds is noticed too; and for
# an instance removed from the config, whose window it closes without an alert.
INSTANCE_DEPLOYED = "pitrflow.instance.deployed"
INSTANCE_REMOVED = "pitrflow.instance.removed"
# Findings are summarized: an event is a notification, the artifact holds the details.
_MAX_FINDINGS = 5


def instance_resource(instance: str, engine: str | None = None) -> dict[str, str]:
    """The resource every pitrflow event is about: `pitrflow.instance.<name>`."""
    resource = {"prefect.resource.id": RESOURCE_PREFIX + instance,
                "prefect.resource.name": instance}
    if engine:
        resource["pitrflow.engine"] = engine
    return resource


def _emit(name: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    emit_event(event=name, resource=resource, payload=payload)


def backup_completed(result: BackupResult, engine: str) -> None:
    _emit(BACKUP_COMPLETED, instance_resource(result.instance, engine), {
        "backup_id": result.backup_id, "kind": result.kind, "size_bytes": result.size_bytes,
        "database_size_bytes": result.data.get("database_size_bytes"),
        "duration_seconds": result.data.get("duration_seconds"), "notes": result.notes})


def wal_shipped(result: ShipResult, engine: str) -> None:
    _emit(WAL_SHIPPED, instance_resource(result.instance, engine), {
        "recoverable_to": result.recoverable_to, "size_bytes": result.size_bytes,
        "stored": len(result.data.get("segments") or []),
        "lag_seconds": result.data.get("lag_seconds")})


def drill_finished(result: DrillResult) -> None:
    """drill.passed or drill.failed, with the RTO, the data lag and the first findings."""
    data = result.data
    _emit(DRILL_PASSED if result.passed else DRILL_FAILED,
          instance_resource(result.instance, data.get("engine")), {
              "rto_seconds": data.get("rto_seconds"),
              "data_lag_seconds": data.get("data_lag_seconds"),
              "target_mode": data.get("target_mode"), "target_time": data.get("target_time"),
              "findings": result.problems[:_MAX_FINDINGS],
              "findings_count": len(result.problems), "record_key": result.record_key})


def check_failed(report: CheckReport, engine: str) -> None:
    failed = [c for c in report.checks if not c.ok and c.critical]
    _emit(CHECK_FAILED, instance_resource(report.instance, engine), {
        "failed": [c.name for c in failed],
        "lines": [c.line() for c in failed[:_MAX_FINDINGS]]})


def instance_deployed(instance: str, engine: str) -> None:
    _emit(INSTANCE_DEPLOYED, instance_resource(instance, engine), {})


def instance_removed(instance: str) -> None:
    _emit(INSTANCE_REMOVED, instance_resource(instance), {})
