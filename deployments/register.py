"""Register the configured deployments through Prefect's API, changing only what differs.

`prefect deploy --all` registers every deployment of prefect.yaml again on each
run, one at a time, re-creating schedules and deleting the scheduled runs of
each: at 200 instances that is 1,600 upserts, each bumping `updated`, and it
never removes a deployment the file no longer names.  Here every desired
deployment carries a fingerprint of everything registered for it (in its
`version`); the server's deployments are read in pages, and only a missing or
different one is sent.  A second run with the same config sends nothing.
Deployments tagged `pitrflow-managed` (or registered by an earlier pitrflow
under an instance's tag) in the config's work pool that the config no longer
names are deleted: a config owns its pool, so two configs (two teams) can share a
server with a pool each.
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import RRuleSchedule
from prefect.exceptions import PrefectHTTPStatusError

from deployments.desired import MANAGED_TAG, Deployment, instance_tag
from deployments.specs import FLOWS, FlowSpec

_PAGE = 200  # the server's largest page
_SENDERS = 4  # deployments in flight at once: each waits mostly on the server
_BUSY_SECONDS = 60.0  # how long a deployment is retried while the server says 503
_DELETE_BATCH = 50  # the most /deployments/bulk_delete takes at once


@dataclass
class RegisterReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"deployments: {len(self.created)} created, {len(self.updated)} updated, "
                f"{len(self.unchanged)} unchanged, {len(self.removed)} removed"]


def parameter_schemas(specs: tuple[FlowSpec, ...] = FLOWS) -> dict[str, dict[str, Any]]:
    """Each flow's parameter schema (the UI's run form), from the flow functions themselves."""
    schemas = {}
    for spec in specs:
        path, _, name = spec.entrypoint.partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        schema: dict[str, Any] = getattr(module, name).parameters.model_dump_for_openapi()
        schemas[spec.flow] = schema
    return schemas


def _body(deployment: Deployment, schema: dict[str, Any]) -> dict[str, Any]:
    """What is registered for DEPLOYMENT, as JSON; its hash is the fingerprint."""
    spec = deployment.spec
    return {
        "entrypoint": spec.entrypoint, "description": spec.description,
        "tags": sorted(deployment.tags), "parameters": deployment.parameters,
        "work_pool_name": deployment.pool, "work_queue_name": spec.work_queue,
        "job_variables": deployment.job_variables, "pull_steps": deployment.pull_steps,
        "schedules": ([{"rrule": deployment.rrule, "timezone": deployment.timezone}]
                      if deployment.rrule else []),
        "concurrency": "1/CANCEL_NEW" if spec.cancel_overlaps else None,
        "parameter_openapi_schema": schema,
    }


def fingerprint(deployment: Deployment, schema: dict[str, Any]) -> str:
    text = json.dumps(_body(deployment, schema), sort_keys=True, separators=(",", ":"))
    return "pitrflow-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _send(client: SyncPrefectClient, flow_id: UUID, deployment: Deployment,
          schema: dict[str, Any], version: str) -> None:
    spec = deployment.spec
    schedules = []
    if deployment.rrule:
        schedules = [DeploymentScheduleCreate(
            schedule=RRuleSchedule(rrule=deployment.rrule, timezone=deployment.timezone),
            active=True)]
    options = None
    if spec.cancel_overlaps:
        options = ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    client.create_deployment(
        flow_id=flow_id, name=deployment.instance, version=version,
        description=spec.description, entrypoint=spec.entrypoint,
        tags=list(deployment.tags), parameters=deployment.parameters,
        parameter_openapi_schema=schema, enforce_parameter_schema=True,
        work_pool_name=deployment.pool, work_queue_name=spec.work_queue,
        job_variables=deployment.job_variables, pull_steps=deployment.pull_steps,
        schedules=schedules, concurrency_limit=1 if spec.cancel_overlaps else None,
        concurrency_options=options)


def _send_all(client: SyncPrefectClient,
              sends: list[tuple[UUID, Deployment, dict[str, Any], str]]) -> None:
    """Send the deployments, retrying a refused write at once rather than after seconds.

    A server on SQLite answers a write that meets another one (its own event
    persister's, mostly) with 503, and Prefect's client sleeps two seconds,
    then four, before it tries again: sent that way, 1,600 deployments spent
    most of their time asleep.  Here a 503 is tried again after a few tens of
    milliseconds, for as long as the server keeps answering within a minute.
    """
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}), \
            ThreadPoolExecutor(max_workers=_SENDERS, thread_name_prefix="pitr-deploy") as pool:
        # Each send runs in a copy of this context, so it sees the settings above.
        futures = [pool.submit(contextvars.copy_context().run, _send_retrying, client, *item)
                   for item in sends]
        for future in futures:
            future.result()


def _send_retrying(client: SyncPrefectClient, flow_id: UUID, deployment: Deployment,
                   schema: dict[str, Any], version: str) -> None:
    deadline = time.monotonic() + _BUSY_SECONDS
    pause = 0.02
    while True:
        try:
            _send(client, flow_id, deployment, schema, version)
            return
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(pause * (0.5 + random.random()))  # noqa: S311 - jitter, not secrecy
        pause = min(pause * 2, 1.0)


def read_tagged(client: SyncPrefectClient) -> list[DeploymentResponse]:
    """Every deployment tagged `pitrflow`, page by page."""
    found: list[DeploymentResponse] = []
    tagged = DeploymentFilter(tags=DeploymentFilterTags(all_=["pitrflow"]))
    while True:
        page = client.read_deployments(deployment_filter=tagged, limit=_PAGE,
                                       offset=len(found))
        found += page
        if len(page) < _PAGE:
            return found


def _ours(found: DeploymentResponse, flow_names: dict[UUID, str]) -> bool:
    """Registered by pitr deploy: tagged managed, or an earlier pitrflow's `prefect deploy`
    entry (one of our flows, under its instance's tag)."""
    if MANAGED_TAG in found.tags:
        return True
    return found.flow_id in flow_names and instance_tag(found.name) in found.tags


def delete_deployments(client: SyncPrefectClient, ids: list[UUID]) -> None:
    """Delete IDS fifty at a time (one request and one transaction each, instead of one of
    each per deployment); one by one on a server older than the bulk endpoint."""
    for start in range(0, len(ids), _DELETE_BATCH):
        batch = ids[start:start + _DELETE_BATCH]
        try:
            client.request(  # type: ignore[call-overload]
                "POST", "/deployments/bulk_delete",
                json={"deployments": {"id": {"any_": [str(i) for i in batch]}},
                      "limit": _DELETE_BATCH})
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code not in (404, 405):
                raise
            for deployment_id in batch:
                client.delete_deployment(deployment_id)


def register(client: SyncPrefectClient, wanted: list[Deployment],
             schemas: dict[str, dict[str, Any]], pool: str) -> RegisterReport:
    """Make the server's pitrflow deployments in POOL exactly WANTED; say what it changed.

    A wanted deployment registered in another pool is moved (updated) into POOL.
    """
    flow_ids = {spec.flow: client.create_flow_from_name(spec.flow) for spec in FLOWS}
    flow_names = {flow_id: name for name, flow_id in flow_ids.items()}
    existing = {(d.flow_id, d.name): d for d in read_tagged(client)}
    report = RegisterReport()
    sends: list[tuple[UUID, Deployment, dict[str, Any], str]] = []
    for deployment in wanted:
        flow_id = flow_ids[deployment.flow]
        schema = schemas[deployment.flow]
        version = fingerprint(deployment, schema)
        found = existing.pop((flow_id, deployment.instance), None)
        if found is not None and found.version == version:
            report.unchanged.append(deployment.key)
            continue
        sends.append((flow_id, deployment, schema, version))
        (report.updated if found is not None else report.created).append(deployment.key)
    _send_all(client, sends)
    stale = [found for (_, name), found in sorted(existing.items(), key=lambda item: item[0][1])
             if _ours(found, flow_names) and found.work_pool_name == pool]
    delete_deployments(client, [found.id for found in stale])
    report.removed = [f"{flow_names.get(found.flow_id, found.flow_id)}/{found.name}"
                      for found in stale]
    return report
