"""The automations that say when backups fail or stop happening.

A failed run is easy to see; the dangerous failure is silence: a worker that
is down fails nothing, while the recoverable window stops moving.  So besides
the reactive "a run failed" alerts there are proactive ones per instance,
which fire when an expected success does *not* arrive in time:

- no completed `ship_logs` within two ship intervals (30 minutes), and
- no completed full or incremental backup within the backup interval plus a
  margin for the backup itself.

Runs are matched through the related resources Prefect puts on every flow-run
event: the flow (by name) and the deployment, which is named after the
instance.  Building the automations is pure; `deployments.setup` applies them.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.automations import AutomationCore, DoNothing, EventTrigger, Posture, SendNotification

from deployments.specs import BACKUP_FLOWS, BACKUP_INTERVAL, DRILL, FLOWS, SHIP, SHIP_INTERVAL

MANAGED_TAG = "pitrflow-managed"
FAILED_EVENTS = {"prefect.flow-run.Failed", "prefect.flow-run.Crashed",
                 "prefect.flow-run.TimedOut"}
COMPLETED = "prefect.flow-run.Completed"
DEFAULT_BACKUP_MARGIN = timedelta(hours=1)

_FAILED_BODY = (
    "Flow run {{ flow_run.name }} of {{ flow.name }} entered {{ flow_run.state.name }} "
    "(instance {{ flow_run.parameters.instance }}).\n"
    "{{ flow_run.state.message }}\n{{ flow_run|ui_url }}"
)


def _flow_runs() -> dict[str, str]:
    return {"prefect.resource.id": "prefect.flow-run.*"}


def _flows(*names: str) -> dict[str, str | list[str]]:
    return {"prefect.resource.role": "flow", "prefect.resource.name": list(names)}


def _deployment(instance: str) -> dict[str, str]:
    return {"prefect.resource.role": "deployment", "prefect.resource.name": instance}


def _actions(notify: UUID | None, subject: str, body: str) -> list[DoNothing | SendNotification]:
    """Notify through a block when one is given; else the alert lives in the UI only."""
    if notify is None:
        return [DoNothing()]
    return [SendNotification(block_document_id=notify, subject=subject, body=body)]


def failed_run(notify: UUID | None) -> AutomationCore:
    return AutomationCore(
        name="pitrflow: a run failed",
        description="Any run of a pitrflow flow failed, crashed or timed out.",
        tags=[MANAGED_TAG],
        trigger=EventTrigger(match=_flow_runs(),
                             match_related=_flows(*(spec.flow for spec in FLOWS)),
                             expect=FAILED_EVENTS, posture=Posture.Reactive, threshold=1,
                             within=timedelta(0)),
        actions=_actions(notify, "pitrflow: {{ flow.name }} {{ flow_run.state.name }}",
                         _FAILED_BODY),
    )


def failed_drill(notify: UUID | None) -> AutomationCore:
    return AutomationCore(
        name="pitrflow: a recovery drill failed",
        description="A nightly restore did not pass its checks: backups may not restore.",
        tags=[MANAGED_TAG],
        trigger=EventTrigger(match=_flow_runs(), match_related=_flows(DRILL.flow),
                             expect=FAILED_EVENTS, posture=Posture.Reactive, threshold=1,
                             within=timedelta(0)),
        actions=_actions(notify, "pitrflow: recovery drill failed",
                         _FAILED_BODY + "\nSee the drill-<instance> artifact for the findings."),
    )


def span(within: timedelta) -> str:
    """A window as people say it: '30 min', '7 h', '45 s'."""
    seconds = int(within.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _silence(instance: str, flows: tuple[str, ...], within: timedelta, what: str,
             notify: UUID | None) -> AutomationCore:
    body = (f"No {what} of instance {instance} completed in the last {span(within)}. "
            "Check that the worker is up and read the latest runs of "
            f"{', '.join(f'{flow}/{instance}' for flow in flows)}.")
    return AutomationCore(
        name=f"pitrflow: {instance}: no {what} in {span(within)}",
        description=body,
        tags=[MANAGED_TAG],
        trigger=EventTrigger(match=_flow_runs(),
                             match_related=[_flows(*flows), _deployment(instance)],
                             expect={COMPLETED}, posture=Posture.Proactive, threshold=1,
                             within=within),
        actions=_actions(notify, f"pitrflow: {instance}: no {what} in {span(within)}", body),
    )


def ship_silence(instance: str, notify: UUID | None,
                 within: timedelta = 2 * SHIP_INTERVAL) -> AutomationCore:
    """Two missed ship intervals: the recoverable window is falling behind."""
    return _silence(instance, (SHIP.flow,), within, "WAL ship", notify)


def backup_silence(instance: str, notify: UUID | None,
                   margin: timedelta = DEFAULT_BACKUP_MARGIN) -> AutomationCore:
    """No full or incremental within the backup interval plus MARGIN."""
    return _silence(instance, BACKUP_FLOWS, BACKUP_INTERVAL + margin, "backup", notify)


def desired_automations(instances: list[str], notify: UUID | None,
                        backup_margin: timedelta = DEFAULT_BACKUP_MARGIN
                        ) -> list[AutomationCore]:
    """Every automation pitrflow manages for INSTANCES, by unique name."""
    wanted = [failed_run(notify), failed_drill(notify)]
    for instance in sorted(instances):
        wanted += [ship_silence(instance, notify), backup_silence(instance, notify, backup_margin)]
    return wanted
