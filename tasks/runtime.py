"""Shared plumbing for tasks: the engine and repository of a run, artifacts, the core's
log lines in the run log, retry rules.

The core logs to the standard `pitrflow` logger; while a task runs, those
records are forwarded to Prefect's run logger so they show in the UI.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from pitrflow import secrets
from pitrflow.config import Config, load_config
from pitrflow.engines.base import Engine, Outcome
from pitrflow.engines.registry import engine_for
from pitrflow.errors import (
    CommandFailedError,
    ConfigError,
    PitrError,
    RepositoryError,
    ServerError,
)
from pitrflow.render import artifact_key
from pitrflow.storage import open_repository, s3_credentials
from pitrflow.storage.base import Repository
from pitrflow.storage.s3_credentials import AwsKeys, keys_from_mapping


class _Forward(logging.Handler):
    def __init__(self, target: logging.LoggerAdapter[Any] | logging.Logger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.log(record.levelno, record.getMessage())


@contextlib.contextmanager
def core_logs_to_run_log() -> Iterator[None]:
    core = logging.getLogger("pitrflow")
    handler = _Forward(get_run_logger())
    core.addHandler(handler)
    previous, propagates = core.level, core.propagate
    core.setLevel(logging.INFO)
    # The run logger prints to the console already; a record that also went on to the
    # root logger's handlers would be printed twice.
    core.propagate = False
    try:
        yield
    finally:
        core.removeHandler(handler)
        core.setLevel(previous)
        core.propagate = propagates


def retry_transient(task: object, task_run: object, state: Any) -> bool:
    """Retry only what is safe and may succeed next time: server and network trouble.

    A refused plan, bad configuration or a checksum mismatch will fail the
    same way again, so those fail at once.
    """
    try:
        state.result()
    except (ServerError, CommandFailedError) as exc:
        return not isinstance(exc, RepositoryError)
    except PitrError:
        return False
    except Exception:  # noqa: BLE001 - unknown errors: one retry is cheap
        return True
    return False


def _resolve_secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    return str(value)


secrets.register_block_resolver(_resolve_secret_block)


def _resolve_connection_block(block_type: str, name: str) -> secrets.Login:
    """A connection block's login (tasks/blocks.py), loaded by slug in this run."""
    from prefect.blocks.core import Block

    import tasks.blocks  # noqa: F401 - registers the block classes Block.load looks up

    slug = f"{block_type}/{name}"
    try:
        block = Block.load(slug)
    except ValueError:
        raise ConfigError(f"Prefect block {slug} (a connection_block) does not exist",
                          "create it in the UI (Blocks, +) or with its class's save(), "
                          "then run again") from None
    login: secrets.Login = block.login()
    return login


secrets.register_connection_resolver(_resolve_connection_block)


def _resolve_aws_block(name: str) -> AwsKeys:
    """S3 keys from a prefect-aws AwsCredentials block, else a Secret block holding JSON."""
    import json

    from prefect.blocks.system import Secret

    try:
        from prefect_aws import AwsCredentials  # type: ignore[import-not-found]
    except ImportError:
        AwsCredentials = None  # noqa: N806 - the optional block class
    if AwsCredentials is not None:
        try:
            block = AwsCredentials.load(name)
        except ValueError:
            pass  # not an AWS credentials block: try a Secret of that name
        else:
            secret = block.aws_secret_access_key
            return AwsKeys(str(block.aws_access_key_id or ""),
                           secret.get_secret_value() if secret else "",
                           block.aws_session_token or None)
    value = Secret.load(name).get()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    return keys_from_mapping(value if isinstance(value, dict) else {}, name)


s3_credentials.register_credentials_resolver(_resolve_aws_block)


def config_for(config_path: str | None) -> Config:
    return load_config(config_path)


def engine_of(instance: str, config_path: str | None) -> tuple[Engine, Repository]:
    """The instance's engine and its repository, from the configuration file."""
    config = config_for(config_path)
    return engine_for(config, instance), open_repository(config.repository)


@contextlib.contextmanager
def progress_artifact(kind: str, instance: str, description: str) -> Iterator[None]:
    """Long core work inside this block shows as one Prefect progress artifact, updated in
    place (created on the first report, so work that reports nothing leaves none)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    from pitrflow.progress import ProgressState, progress_sink

    created: list[Any] = []
    last = [-1]

    def report(state: ProgressState) -> None:
        percent = float(state.percent)
        if percent == last[0]:
            return
        last[0] = int(percent)
        if not created:
            created.append(create_progress_artifact(
                progress=percent, key=artifact_key(f"{kind}-progress", instance),
                description=description))
        else:
            update_progress_artifact(created[0], progress=percent,
                                     description=f"{description}: {state.line()}")

    with progress_sink(report):
        yield


def flow_result(outcome: Outcome) -> dict[str, Any]:
    """A flow's return value: the outcome's data, and the text the CLI prints for it."""
    return {**outcome.data, "summary": outcome.text}


def publish(outcome: Outcome, description: str) -> None:
    """Publish an outcome as its artifact: a table where it is tabular, else markdown."""
    key = artifact_key(outcome.artifact, outcome.instance)
    if outcome.table is not None:
        create_table_artifact(table=outcome.table, key=key, description=description)
    else:
        create_markdown_artifact(markdown=outcome.markdown, key=key, description=description)
