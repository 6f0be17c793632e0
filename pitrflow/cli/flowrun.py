"""Running one of pitrflow's Prefect flows from the command line.

Imported only when a Prefect server is configured and answers, so commands
that run without the orchestrator never pay for importing Prefect.  Runs are
tagged as deployments tag theirs, so the UI's filters find ad-hoc runs too.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

from pitrflow.errors import PitrError


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


def load_block_resolvers() -> None:
    """Let the core read Prefect blocks (Secret, AWS credentials, connection blocks) in
    this process, for the steps the CLI runs itself before or beside a flow."""
    import tasks.runtime  # noqa: F401 - registers the resolvers on import


def run_flow(module: str, name: str, *, kind: str, instance: str, **params: Any) -> Any:
    """Run flows.<module>.<name> in this process against the configured Prefect API."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect import tags

    flow = getattr(importlib.import_module(module), name)
    _quiet_prefect_tracebacks()
    with tags("pitrflow", f"pitrflow-instance-{instance}", f"pitrflow-{kind}"):
        return flow(instance=instance, **params)
