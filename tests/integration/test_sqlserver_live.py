"""The whole SQL Server path against a live server: backup -> repository -> restore -> drill.

Runs only when ``PITR_MSSQL_DSN`` is set; otherwise every test here is skipped with
that reason.  The format is a URL (percent-encode special characters)::

    PITR_MSSQL_DSN='mssql://USER:PASSWORD@HOST[:PORT]/?backup_dir_server=SERVER_DIR&backup_dir_worker=WORKER_DIR[&odbc_driver=FreeTDS][&encrypt=yes|no][&trust_server_certificate=yes|no][&data_dir_server=DIR]'

- USER must be able to create, back up, restore and drop databases (sysadmin, or
  dbcreator plus ownership of what it creates); the tests create their own databases,
  named ``pitrflow_live_<random> ]q`` to exercise quoting, and drop them afterwards.
- SERVER_DIR is a directory the SQL Server service writes backups to, as the server
  sees it; WORKER_DIR is the same directory as this machine sees it (a bind mount or
  a share).  For SQL Server in a container started with
  ``-v /srv/mssql-backup:/var/opt/mssql/backup`` (and the directory writable by the
  container's mssql user, uid 10001)::

      PITR_MSSQL_DSN='mssql://sa:Str0ng%21Pass@127.0.0.1:1433/?backup_dir_server=/var/opt/mssql/backup&backup_dir_worker=/srv/mssql-backup&trust_server_certificate=yes'

- The driver defaults to FreeTDS (Debian: ``apt-get install unixodbc tdsodbc``);
  pyodbc must be installed (``pip install 'pitrflow[sqlserver]'``).
- The LSN test reads a commit's LSN with ``fn_dblog``, which needs sysadmin.

Each test checks one thing a user relies on, on data: the restored rows are exactly
those committed by the target time.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from pitrflow.config import DrillConfig, InstanceConfig
from pitrflow.drill.record import drill_history
from pitrflow.engines.base import RestoreTarget
from pitrflow.engines.sqlserver import ops
from pitrflow.engines.sqlserver.baseline import stored_baselines
from pitrflow.engines.sqlserver.catalog import read_sqlserver_catalog
from pitrflow.engines.sqlserver.connection import SqlExecutor, open_session
from pitrflow.engines.sqlserver.tsql import quote_name, quote_string
from pitrflow.errors import BackupRefusedError, RestoreRefusedError
from pitrflow.storage.base import sha256_file
from pitrflow.storage.fs import FsRepository

DSN_ENV = "PITR_MSSQL_DSN"
PASSWORD_ENV = "PITR_LIVE_MSSQL_PASSWORD"

pytestmark = pytest.mark.skipif(
    not os.environ.get(DSN_ENV),
    reason=f"{DSN_ENV} is not set: no SQL Server to test against (format in this module's "
           "docstring)",
)


def instance_from_dsn(dsn: str, database: str) -> tuple[InstanceConfig, str]:
    """An instance configuration and its password from ``PITR_MSSQL_DSN``."""
    url = urlsplit(dsn)
    if url.scheme != "mssql" or not url.hostname or url.username is None:
        raise ValueError(f"{DSN_ENV} must look like mssql://USER:PASSWORD@HOST[:PORT]/?...")
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    missing = [k for k in ("backup_dir_server", "backup_dir_worker") if k not in query]
    if missing:
        raise ValueError(f"{DSN_ENV} lacks {', '.join(missing)}")

    def flag(name: str, default: bool) -> bool:
        return query.get(name, "yes" if default else "no").lower() in ("yes", "true", "1")

    instance = InstanceConfig(
        name="live", engine="sqlserver", host=url.hostname, port=url.port or 1433,
        user=unquote(url.username), database=database, password_env=PASSWORD_ENV,
        odbc_driver=query.get("odbc_driver", "FreeTDS"), encrypt=flag("encrypt", True),
        trust_server_certificate=flag("trust_server_certificate", False),
        backup_dir_server=query["backup_dir_server"],
        backup_dir_worker=Path(query["backup_dir_worker"]),
        data_dir_server=query.get("data_dir_server", ""),
        backup_timeout_seconds=1800,
    )
    return instance, unquote(url.password or "")


@dataclass
class Live:
    instance: InstanceConfig
    repo: FsRepository
    created: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def db(self) -> str:
        return self.instance.database

    def session(self) -> AbstractContextManager[SqlExecutor]:
        return open_session(self.instance, on_message=self.messages.append)

    def for_database(self, database: str) -> InstanceConfig:
        return replace(self.instance, database=database)


def _insert(sql: SqlExecutor, db: str, batch: int) -> None:
    sql.run(f"INSERT INTO {quote_name(db)}.dbo.t (batch, note) "
            f"SELECT TOP (25) ?, N'row' FROM sys.all_objects", [batch])


def _server_utc(sql: SqlExecutor) -> datetime:
    text = sql.scalar("SELECT CONVERT(varchar(27), SYSUTCDATETIME(), 126)")
    return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)


def _batches(live: Live, db: str) -> dict[int, int]:
    with live.session() as sql:
        rows = sql.query(f"SELECT batch, COUNT(*) AS n FROM {quote_name(db)}.dbo.t "
                         "GROUP BY batch")
    return {int(r["batch"]): int(r["n"]) for r in rows}


def _exists(live: Live, db: str) -> bool:
    with live.session() as sql:
        return sql.scalar("SELECT name FROM sys.databases WHERE name = ?", [db]) is not None


def _drop(sql: SqlExecutor, db: str) -> None:
    if sql.scalar("SELECT name FROM sys.databases WHERE name = ?", [db]) is not None:
        sql.run(f"ALTER DATABASE {quote_name(db)} SET SINGLE_USER WITH ROLLBACK IMMEDIATE")
        sql.run(f"DROP DATABASE {quote_name(db)}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    try:
        import pyodbc  # noqa: F401
    except ImportError:
        pytest.fail(f"{DSN_ENV} is set but pyodbc is not installed: pip install "
                    "'pitrflow[sqlserver]'")
    database = f"pitrflow_live_{secrets.token_hex(4)} ]q"
    instance, password = instance_from_dsn(os.environ[DSN_ENV], database)
    os.environ[PASSWORD_ENV] = password
    assert instance.backup_dir_worker is not None and instance.backup_dir_worker.is_dir(), (
        f"backup_dir_worker {instance.backup_dir_worker} must exist on this machine")
    repo = FsRepository(tmp_path_factory.mktemp("mssql-repo"))
    state = Live(instance=instance, repo=repo, created=[database])
    handler = _Collect(state.messages)
    logger = logging.getLogger("pitrflow.sqlserver")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with state.session() as sql:
            sql.run(f"CREATE DATABASE {quote_name(database)}")
            sql.run(f"ALTER DATABASE {quote_name(database)} SET RECOVERY FULL")
            # "at" is datetimeoffset, the one type the drill's freshness check accepts.
            sql.run(f"CREATE TABLE {quote_name(database)}.dbo.t (id int IDENTITY PRIMARY KEY, "
                    "batch int NOT NULL, note nvarchar(40) NOT NULL, "
                    "at datetimeoffset NOT NULL DEFAULT SYSDATETIMEOFFSET())")
        yield state
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        with state.session() as sql:
            for name in state.created:
                _drop(sql, name)
        os.environ.pop(PASSWORD_ENV, None)


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@dataclass
class Chain:
    backups: list[dict[str, object]]
    target: datetime


@pytest.fixture(scope="module")
def chain(live: Live) -> Chain:
    """full, log, differential, log: batch 3 is committed before the target, batch 4 after."""
    backups = []
    with live.session() as sql:
        _insert(sql, live.db, 1)
    backups.append(ops.sqlserver_backup(live.instance, live.repo, "full"))
    with live.session() as sql:
        _insert(sql, live.db, 2)
    backups.append(ops.sqlserver_backup(live.instance, live.repo, "log"))
    backups.append(ops.sqlserver_backup(live.instance, live.repo, "incremental"))
    with live.session() as sql:
        _insert(sql, live.db, 3)
        time.sleep(1.2)
        target = _server_utc(sql)
        time.sleep(1.2)
        _insert(sql, live.db, 4)
    backups.append(ops.sqlserver_backup(live.instance, live.repo, "log"))
    return Chain(backups=backups, target=target)


def test_each_backup_is_stored_with_its_msdb_rows_and_checksum(live: Live, chain: Chain) -> None:
    catalog = read_sqlserver_catalog(live.repo, "live")

    assert catalog.rejected == {}
    assert [r.kind for r in catalog.records] == ["full", "log", "differential", "log"]
    assert [b["type"] for b in chain.backups] == ["full", "log", "differential", "log"]
    for record in catalog.records:
        stored = record.files[0]
        path = live.repo.path_of(record.key(stored.name))
        assert sha256_file(path) == (stored.sha256, stored.size)
        assert record.rows[0].database_name == live.db
        assert record.checksum is True
    assert not list(live.instance.backup_dir_worker.glob("live_*")), (  # type: ignore[union-attr]
        "the server-side copies are removed once stored")


def test_backup_progress_reaches_the_log(live: Live, chain: Chain) -> None:
    assert any("percent processed" in m for m in live.messages), live.messages
    assert any("BACKUP DATABASE successfully processed" in m for m in live.messages)


def test_restore_to_a_time_has_exactly_the_rows_committed_by_then(live: Live,
                                                                  chain: Chain) -> None:
    name = f"{live.db}_pit"
    live.created.append(name)

    result = ops.sqlserver_restore(live.instance, live.repo, chain.target, new_name=name)

    assert result["restore_as"] == name
    assert [s["kind"] for s in result["steps"]] == ["full", "differential", "log"]
    assert _batches(live, name) == {1: 25, 2: 25, 3: 25}


def test_restore_to_the_latest_has_every_row(live: Live, chain: Chain) -> None:
    name = f"{live.db}_latest"
    live.created.append(name)

    ops.sqlserver_restore(live.instance, live.repo, None, new_name=name)

    assert _batches(live, name) == {1: 25, 2: 25, 3: 25, 4: 25}


def test_restoring_over_an_existing_database_needs_replace(live: Live, chain: Chain) -> None:
    with pytest.raises(RestoreRefusedError) as caught:
        ops.sqlserver_restore(live.instance, live.repo, chain.target, new_name=live.db)

    assert caught.value.message == f"database {live.db} already exists on the server"
    assert _batches(live, live.db) == {1: 25, 2: 25, 3: 25, 4: 25}, "source untouched"


def test_replace_overwrites_a_database(live: Live, chain: Chain) -> None:
    name = f"{live.db}_replaced"
    live.created.append(name)
    ops.sqlserver_restore(live.instance, live.repo, None, new_name=name)

    result = ops.sqlserver_restore(live.instance, live.repo, chain.target, new_name=name,
                                   replace=True)

    assert result["replaced"] is True
    assert _batches(live, name) == {1: 25, 2: 25, 3: 25}


def test_log_backup_of_a_simple_database_is_refused(live: Live) -> None:
    name = f"pitrflow_live_{uuid.uuid4().hex[:8]}_simple"
    live.created.append(name)
    with live.session() as sql:
        sql.run(f"CREATE DATABASE {quote_name(name)}")
        sql.run(f"ALTER DATABASE {quote_name(name)} SET RECOVERY SIMPLE")

    with pytest.raises(BackupRefusedError) as caught:
        ops.sqlserver_backup(live.for_database(name), live.repo, "log")

    assert caught.value.message == (
        f"database {name} uses the SIMPLE recovery model, which keeps no log to back up")


def test_drill_checks_the_restore_and_drops_it(live: Live, chain: Chain,
                                              tmp_path: Path) -> None:
    name = f"{live.db}_drill"
    live.created.append(name)
    # The source holds batch 4 too, so the restored copy has 75 of its 100 rows: the
    # baselines of the differential (50 rows) and the last log (100) bound it, at the
    # default tolerance.
    instance = replace(live.instance, drill=DrillConfig(
        freshness={"dbo.t": "at"}, max_lag_seconds=600))
    catalog = read_sqlserver_catalog(live.repo, "live")
    assert len(stored_baselines(live.repo, "live", catalog.records)) == 4
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "dbo.t.json").write_text(json.dumps({
        "name": "team.t", "table": "dbo.t",
        "expectations": [{"type": "expect_column_values_to_be_between",
                          "kwargs": {"column": "batch", "min_value": 1, "max_value": 3},
                          "meta": {"why": "batch 4 came after the target"}}]}))

    result = ops.sqlserver_drill(instance, live.repo, chain.target, scratch_name=name,
                                 checks_dir=tmp_path)

    assert result["ok"] is True, result["findings"]
    assert result["rto_seconds"] > 0
    assert set(result["timings"]) >= {"plan", "source_facts", "stage", "restore", "checkdb",
                                      "quality_checks", "drop"}
    checked = {(r["suite"], r["expectation_type"], r["column"]): r for r in result["quality"]}
    assert set(checked) == {
        ("team.t", "expect_column_values_to_be_between", "batch"),
        ("pitrflow.generated.dbo.t", "expect_table_row_count_to_be_between", None),
        ("pitrflow.generated.dbo.t", "expect_column_values_to_be_unique", "id"),
        ("pitrflow.generated.dbo.t", "expect_column_values_to_not_be_null", "id"),
        ("pitrflow.generated.dbo.t", "expect_column_values_to_not_be_null", "batch"),
        ("pitrflow.generated.dbo.t", "expect_column_values_to_not_be_null", "note"),
        ("pitrflow.generated.dbo.t", "expect_column_values_to_not_be_null", "at"),
        ("pitrflow.generated.dbo.t", "expect_column_max_to_be_between", "at"),
    }
    assert all(r["success"] for r in result["quality"]), result["quality"]
    assert checked[("pitrflow.generated.dbo.t", "expect_table_row_count_to_be_between",
                    None)]["observed"] == "75"
    assert result["data_lag_seconds"] is not None and result["data_lag_seconds"] >= 0
    assert not _exists(live, name)
    [record] = [d for d in drill_history(live.repo, "live") if d.started.isoformat()
                == result["started"]]
    assert record.passed and record.engine == "sqlserver" and record.quality_checked == 8
    assert record.reference.startswith("judged against the source as recorded just before")
    [rows] = [v for v in record.tables if v["table"] == "dbo.t" and v["check"] == "row_count"]
    assert (rows["bounds"], rows["restored"], rows["result"]) == ("50..100", "75", "pass")
    assert record.evidence and Path(record.evidence, "summary.json").is_file()


def test_drill_reports_a_failed_expectation(live: Live, chain: Chain, tmp_path: Path) -> None:
    name = f"{live.db}_drill_fail"
    live.created.append(name)
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "dbo.t.json").write_text(json.dumps({
        "name": "team.t.greedy", "table": "dbo.t",
        "expectations": [{"type": "expect_table_row_count_to_be_between",
                          "kwargs": {"min_value": 1000}}]}))

    result = ops.sqlserver_drill(live.instance, live.repo, None, scratch_name=name,
                                 checks_dir=tmp_path)

    assert result["ok"] is False
    assert any(f.startswith("FAILED team.t.greedy: expect_table_row_count_to_be_between "
                            "observed=100") for f in result["findings"]), result["findings"]
    assert not _exists(live, name)


def test_dry_run_names_the_stored_backups(live: Live, chain: Chain) -> None:
    text, statements = ops.sqlserver_plan_text(live.instance, live.repo, chain.target)

    for backup in chain.backups[:3]:
        assert str(backup["id"]) in text
    assert statements[0].startswith("RESTORE FILELISTONLY FROM DISK = ")
    assert quote_string(live.instance.backup_dir_server)[:-1] in statements[0]


@dataclass
class Marked:
    """A database whose log holds a marked transaction and a known commit LSN."""

    instance: InstanceConfig
    commit_lsn: str


_COMMIT_LSN_SQL = """\
SELECT c.[Current LSN] AS lsn
FROM sys.fn_dblog(NULL, NULL) AS c
WHERE c.Operation = 'LOP_COMMIT_XACT'
  AND c.[Transaction ID] IN (SELECT b.[Transaction ID] FROM sys.fn_dblog(NULL, NULL) AS b
                             WHERE b.Operation = 'LOP_BEGIN_XACT'
                               AND b.[Transaction Name] = 'batch_4')"""


@pytest.fixture(scope="module")
def marked(live: Live) -> Marked:
    """full; batch 2; batch 3 in transaction release_1 WITH MARK; batch 4 in transaction
    batch_4 (its commit LSN read from fn_dblog); batch 5; log backup."""
    db = f"pitrflow_live_{secrets.token_hex(4)}_marks ]q"
    live.created.append(db)
    instance = replace(live.instance, name="live_marks", database=db)
    table = f"{quote_name(db)}.dbo.t"

    def batch(number: int) -> str:
        return f"INSERT INTO {table} (batch, note) SELECT TOP (25) {number}, N'row' " \
               "FROM sys.all_objects"

    with live.session() as sql:
        sql.run(f"CREATE DATABASE {quote_name(db)}")
        sql.run(f"ALTER DATABASE {quote_name(db)} SET RECOVERY FULL")
        sql.run(f"CREATE TABLE {table} (id int IDENTITY PRIMARY KEY, batch int NOT NULL, "
                "note nvarchar(40) NOT NULL)")
        sql.run(batch(1))
    ops.sqlserver_backup(instance, live.repo, "full")
    with live.session() as sql:
        sql.run(batch(2))
        sql.run(f"USE {quote_name(db)}; BEGIN TRAN release_1 WITH MARK N'pitrflow live test'; "
                f"{batch(3)}; COMMIT TRAN release_1")
        sql.run(f"USE {quote_name(db)}; BEGIN TRAN batch_4; {batch(4)}; COMMIT TRAN batch_4")
        sql.run(f"USE {quote_name(db)}")
        commit_lsn = str(sql.scalar(_COMMIT_LSN_SQL))
        sql.run(batch(5))
    ops.sqlserver_backup(instance, live.repo, "log")
    return Marked(instance=instance, commit_lsn=commit_lsn)


def test_the_log_backup_records_its_mark(live: Live, marked: Marked) -> None:
    catalog = read_sqlserver_catalog(live.repo, "live_marks")

    [log] = [r for r in catalog.records if r.kind == "log"]
    assert [(m.mark_name, m.description) for m in log.marks] == [
        ("release_1", "pitrflow live test")]
    head = log.rows[0]
    assert head.first_lsn <= log.marks[0].lsn < head.last_lsn


@pytest.mark.parametrize(("exclusive", "batches"), [(False, {1: 25, 2: 25, 3: 25}),
                                                    (True, {1: 25, 2: 25})])
def test_restore_to_a_marked_transaction(live: Live, marked: Marked, exclusive: bool,
                                         batches: dict[int, int]) -> None:
    name = f"{marked.instance.database}_mark_{int(exclusive)}"
    live.created.append(name)

    result = ops.sqlserver_restore(marked.instance, live.repo,
                                   RestoreTarget(name="release_1", exclusive=exclusive),
                                   new_name=name)

    verb = "STOPBEFOREMARK" if exclusive else "STOPATMARK"
    assert result["stop"] == f"{verb} = N'release_1'"
    assert _batches(live, name) == batches


@pytest.mark.parametrize(("exclusive", "batches"), [(False, {1: 25, 2: 25, 3: 25, 4: 25}),
                                                    (True, {1: 25, 2: 25, 3: 25})])
def test_restore_to_the_lsn_of_a_commit(live: Live, marked: Marked, exclusive: bool,
                                        batches: dict[int, int]) -> None:
    name = f"{marked.instance.database}_lsn_{int(exclusive)}"
    live.created.append(name)

    result = ops.sqlserver_restore(marked.instance, live.repo,
                                   RestoreTarget(lsn=marked.commit_lsn, exclusive=exclusive),
                                   new_name=name)

    assert result["target_kind"] == "lsn"
    assert _batches(live, name) == batches


def test_an_unknown_mark_is_refused_before_anything_runs(live: Live, marked: Marked) -> None:
    name = f"{marked.instance.database}_nomark"

    with pytest.raises(RestoreRefusedError) as caught:
        ops.sqlserver_restore(marked.instance, live.repo, RestoreTarget(name="Release_1"),
                              new_name=name)

    assert caught.value.message == (f"no marked transaction 'Release_1' is recorded for "
                                    f"{marked.instance.database}")
    assert not _exists(live, name)
