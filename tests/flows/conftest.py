from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def pitrflow_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[Any]]]:
    """Record the events runs emit (still sending them on); the returned function
    drains the events worker and gives the `pitrflow.*` events, oldest first."""
    from prefect.events.clients import AssertingPassthroughEventsClient
    from prefect.events.worker import EventsWorker

    AssertingPassthroughEventsClient.reset()
    worker = EventsWorker.instance(AssertingPassthroughEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)

    def emitted() -> list[Any]:
        worker.drain()
        return [event for client in AssertingPassthroughEventsClient.all
                for event in client.events if event.event.startswith("pitrflow.")]

    yield emitted
    worker.drain()
