"""The automations that say when backups fail or stop happening, for the whole fleet.

A failed run is easy to see; the dangerous failure is silence: a worker that
is down fails nothing, while the recoverable window stops moving.  So besides
the reactive alerts (a run failed, a drill failed, a health check failed)
there are proactive ones, which fire when an expected success does *not*
arrive in time:

- no `pitrflow.wal.shipped` within two ship intervals (30 minutes), and
- no `pitrflow.backup.completed` within the backup interval plus a margin.

Five automations cover every instance, however many there are: the tasks emit
events whose resource is the instance (`pitrflow.instance.<name>`, see
tasks/events.py), and each trigger keeps one window per resource
(`for_each`).  The silence windows slide: each success starts the instance's
window again (it is both `after` and `expect`), and when a window closes
empty the alert fires once for that silence.  `pitr deploy` emits
`pitrflow.instance.deployed` for every configured instance, which opens a
window for an instance not yet watched (new, or silent since its last alert)
and leaves a running window alone; `pitrflow.instance.removed`, for an
instance taken out of the config, closes its window without an alert.

Building the automations is pure; `deployments.setup` applies them.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.automations import AutomationCore, DoNothing, EventTrigger, Posture, SendNotification

from deployments.desired import MANAGED_TAG
from deployments.specs import BACKUP_INTERVAL, FLOWS, SHIP_INTERVAL
from tasks.events import (
    BACKUP_COMPLETED,
    CHECK_FAILED,
    DRILL_FAILED,
    INSTANCE_DEPLOYED,
    INSTANCE_REMOVED,
    RESOURCE_PREFIX,
    WAL_SHIPPED,
)

FAILED_EVENTS = {"prefect.flow-run.Failed", "prefect.flow-run.Crashed",
                 "prefect.flow-run.TimedOut"}
DEFAULT_BACKUP_MARGIN = timedelta(hours=1)
# A health check that keeps failing alerts once per instance in this window, not
# hourly: a shared outage (the repository unreachable) would otherwise page once
# per instance per check run.
CHECK_ALERT_EVERY = timedelta(hours=6)
PER_INSTANCE = {"prefect.resource.id"}

_INSTANCE = "{{ event.resource.name }}"
_FAILED_BODY = (
    "Flow run {{ flow_run.name }} of {{ flow.name }} entered {{ flow_run.state.name }} "
    "(instance {{ flow_run.parameters.instance }}).\n"
    "{{ flow_run.state.message }}\n{{ flow_run|ui_url }}"
)


def _flow_runs() -> dict[str, str]:
    return {"prefect.resource.id": "prefect.flow-run.*"}


def _instances() -> dict[str, str]:
    return {"prefect.resource.id": RESOURCE_PREFIX + "*"}


def _flows(*names: str) -> dict[str, str | list[str]]:
    return {"prefect.resource.role": "flow", "prefect.resource.name": list(names)}


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
    body = (f"The recovery drill of instance {_INSTANCE} failed: "
            "{{ event.payload.findings | join('; ') }} "
            "({{ event.payload.findings_count }} finding(s); RTO "
            "{{ event.payload.rto_seconds }} s).\n"
            f"Backups may not restore. See the drill-{_INSTANCE} artifact and "
            "{{ event.payload.record_key }}.")
    return AutomationCore(
        name="pitrflow: a recovery drill failed",
        description="A nightly restore did not pass its checks: backups may not restore.",
        tags=[MANAGED_TAG],
        trigger=EventTrigger(match=_instances(), expect={DRILL_FAILED},
                             posture=Posture.Reactive, threshold=1, within=timedelta(0)),
        actions=_actions(notify, f"pitrflow: {_INSTANCE}: recovery drill failed", body),
    )


def failed_check(notify: UUID | None, every: timedelta = CHECK_ALERT_EVERY) -> AutomationCore:
    body = (f"pitr check {_INSTANCE} failed: {{{{ event.payload.failed | join(', ') }}}}\n"
            "{{ event.payload.lines | join('\\n') }}\n"
            f"(further failures of {_INSTANCE} within {span(every)} are not sent again)")
    return AutomationCore(
        name="pitrflow: a health check failed",
        description="A critical line of pitr check failed; the check artifact has the hints.",
        tags=[MANAGED_TAG],
        trigger=EventTrigger(match=_instances(), expect={CHECK_FAILED}, for_each=PER_INSTANCE,
                             posture=Posture.Reactive, threshold=1, within=every),
        actions=_actions(notify, f"pitrflow: {_INSTANCE}: health check failed", body),
    )


def span(within: timedelta) -> str:
    """A window as people say it: '30 min', '7 h', '45 s'."""
    seconds = int(within.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _silence(success: str, within: timedelta, what: str, flows: str,
             notify: UUID | None) -> AutomationCore:
    body = (f"No {what} of instance {_INSTANCE} in the {span(within)} since "
            "{{ event.occurred }} ({{ event.event }}). Check that the worker is up and "
            f"read the latest runs of {flows}/{_INSTANCE}.")
    return AutomationCore(
        name=f"pitrflow: no {what} in {span(within)}",
        description=f"An instance had no {what} for {span(within)}; one alert per silence.",
        tags=[MANAGED_TAG],
        trigger=EventTrigger(match=_instances(), for_each=PER_INSTANCE,
                             after={success, INSTANCE_DEPLOYED},
                             expect={success, INSTANCE_REMOVED},
                             posture=Posture.Proactive, threshold=1, within=within),
        actions=_actions(notify, f"pitrflow: {_INSTANCE}: no {what} in {span(within)}", body),
    )


def ship_silence(notify: UUID | None, within: timedelta = 2 * SHIP_INTERVAL) -> AutomationCore:
    """Two missed ship intervals: the recoverable window is falling behind."""
    return _silence(WAL_SHIPPED, within, "WAL ship", "ship_logs", notify)


def backup_silence(notify: UUID | None,
                   margin: timedelta = DEFAULT_BACKUP_MARGIN) -> AutomationCore:
    """No full or incremental within the backup interval plus MARGIN."""
    return _silence(BACKUP_COMPLETED, BACKUP_INTERVAL + margin, "backup",
                    "backup_full|backup_incremental", notify)


def desired_automations(notify: UUID | None,
                        backup_margin: timedelta = DEFAULT_BACKUP_MARGIN
                        ) -> list[AutomationCore]:
    """Every automation pitrflow manages, by unique name: the same five for any fleet."""
    return [failed_run(notify), failed_drill(notify), failed_check(notify),
            ship_silence(notify), backup_silence(notify, backup_margin)]
