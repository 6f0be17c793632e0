"""A connection block on the real server: the worker's flow run loads it, connects with
its password, and the password shows up nowhere.

The session's PostgreSQL 18 gets a role that may only log in with its password
(scram over TCP, for SQL and for replication), so a ship that succeeds proves
the password came from the block.  Afterwards every place a secret could leak
is searched: the run's logs, its artifacts, its events, its parameters, and the
worker's and the server's output.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventFilter, EventResourceFilter
from psycopg import sql

from pitrflow.devtools.localpg import LocalCluster
from tasks.blocks import PostgresConnection
from tests.conftest import drop_slot
from tests.deploy.conftest import Stack

pytestmark = pytest.mark.deploy

ROLE = "pitrflow_blocky"


@dataclass
class Blocky:
    password: str
    config: Path


@pytest.fixture
def blocky(stack: Stack, pg18: LocalCluster) -> Iterator[Blocky]:
    password = "blk-" + secrets.token_urlsafe(18)
    hba = pg18.data_dir / "pg_hba.conf"
    original_hba, original_config = hba.read_text(), stack.env.config_path.read_text()
    rules = "".join(f"host {db} {ROLE} 127.0.0.1/32 scram-sha-256\n"
                    for db in ("all", "replication"))
    with pg18.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION SUPERUSER PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(password)))
    hba.write_text(rules + original_hba)
    with pg18.connect() as conn:
        conn.execute("SELECT pg_reload_conf()")
    stack.env.config_path.write_text(original_config + f"""
[instances.blocky]
engine = "postgresql"
host = "127.0.0.1"
port = {pg18.port}
user = "{ROLE}"
slot = "{ROLE}"
connection_block = "blocky-login"
bin_dir = "{pg18.bin_dir}"
""")
    PostgresConnection(username=ROLE, password=password).save("blocky-login", overwrite=True)
    try:
        yield Blocky(password, stack.env.config_path)
    finally:
        stack.env.config_path.write_text(original_config)
        stack.deploy()
        hba.write_text(original_hba)
        drop_slot(pg18, ROLE)
        with pg18.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


def _everything_said_by(flow_run_id: object) -> str:
    """Logs, artifacts, events and the run itself, as one text to search."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[run.id])), limit=200)
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        events = client.read_events(EventFilter(
            resource=EventResourceFilter(id=["pitrflow.instance.blocky"])), limit=50)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[run.id])))
    assert logs, "the run logged nothing: the search below would prove nothing"
    return "\n".join([run.model_dump_json(), *(log.message for log in logs),
                      *(a.model_dump_json() for a in artifacts),
                      *(e.model_dump_json() for e in events.events),
                      *(t.model_dump_json() for t in tasks)])


def test_a_connection_block_logs_in_from_the_worker_and_its_password_is_never_shown(
        stack: Stack, blocky: Blocky, pg18: LocalCluster) -> None:
    # The role cannot log in without its password: the block is what lets the ship in.
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host="127.0.0.1", port=pg18.port, user=ROLE, dbname="postgres",
                        connect_timeout=5).close()
    said = stack.deploy()
    assert "deployments: 8 created, 0 updated, 16 unchanged, 0 removed" in said, said
    assert any(line.startswith("block types: pitrflow-postgresql-connection") for line in said)

    shipped = stack.run("ship_logs/blocky")
    assert shipped.state and shipped.state.is_completed(), stack.explain(shipped)
    told = _everything_said_by(shipped.id)
    assert "shipped" in told and "blocky" in told
    assert blocky.password not in told

    # A block made for another login is refused in one line, before any connection.
    PostgresConnection(username="someone", password=blocky.password).save(
        "blocky-other", overwrite=True)
    blocky.config.write_text(blocky.config.read_text().replace(
        'connection_block = "blocky-login"', 'connection_block = "blocky-other"'))
    refused = stack.run("ship_logs/blocky")
    assert refused.state and refused.state.is_failed(), stack.explain(refused)
    assert (f"Prefect block pitrflow-postgresql-connection/blocky-other holds the login of "
            f"'someone', but instance blocky connects as '{ROLE}'") in (
        refused.state.message or "")
    assert blocky.password not in _everything_said_by(refused.id)
    for log in (stack.worker_log, stack.worker_log.parent / "server.log"):
        assert blocky.password not in log.read_text(errors="replace"), log
