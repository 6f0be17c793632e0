"""The connection string (quoting, redaction) and the executor's draining and messages.

The executor is exercised with a tiny cursor that replays what pyodbc reports for a
BACKUP with STATS (messages spread over several results, then an error); the live
test (tests/integration/test_sqlserver_live.py) runs the same code against a server.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

import pytest

from pitrflow.config import InstanceConfig
from pitrflow.engines.sqlserver.connection import (
    SqlExecutor,
    SqlServerStatementError,
    certificate_note,
    clean_message,
    connection_string,
    odbc_value,
    open_session,
    redacted_connection_string,
)
from pitrflow.errors import ServerError

PASSWORD = "s3cr;et}{pa=ss"

INSTANCE = InstanceConfig(
    name="sales", engine="sqlserver", host="sql1.internal", port=1433, user="pitrflow",
    database="Sales", password_env="PITR_TEST_MSSQL_PASSWORD",
    backup_dir_server="D:\\Backups", odbc_driver="FreeTDS",
)


# --- connection strings ---


def test_freetds_string_spells_out_every_attribute() -> None:
    assert connection_string(INSTANCE, "pw") == (
        "DRIVER={FreeTDS};SERVER=sql1.internal;PORT=1433;TDS_Version=7.4;ClientCharset=UTF-8;"
        "Encryption=require;DATABASE=master;UID={pitrflow};APP=pitrflow;PWD={pw}"
    )


def test_microsoft_driver_string_uses_its_own_keywords() -> None:
    instance = dataclasses.replace(INSTANCE, odbc_driver="ODBC Driver 18 for SQL Server",
                                   port=14330, trust_server_certificate=True)
    assert connection_string(instance, None) == (
        "DRIVER={ODBC Driver 18 for SQL Server};SERVER=tcp:sql1.internal,14330;Encrypt=yes;"
        "TrustServerCertificate=yes;DATABASE=master;UID={pitrflow};APP=pitrflow"
    )


def test_unencrypted_freetds_only_requests_encryption() -> None:
    instance = dataclasses.replace(INSTANCE, encrypt=False)
    assert "Encryption=request" in connection_string(instance, None)


def test_password_with_semicolon_and_braces_is_braced_and_doubled() -> None:
    text = connection_string(INSTANCE, PASSWORD)
    assert text.endswith(";PWD={s3cr;et}}{pa=ss}")


def test_values_with_separators_are_braced() -> None:
    instance = dataclasses.replace(INSTANCE, user="dom\\back}up", host="sql;1")
    text = connection_string(instance, None, database="My DB")
    assert "UID={dom\\back}}up}" in text
    assert "SERVER={sql;1}" in text
    assert "DATABASE={My DB}" in text
    assert odbc_value("plain_name") == "plain_name"
    assert odbc_value(" lead") == "{ lead}"
    assert odbc_value("") == "{}"


def test_nul_in_a_value_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        connection_string(INSTANCE, "a\x00b")


def test_redacted_string_never_carries_the_password() -> None:
    text = redacted_connection_string(INSTANCE)
    assert text.endswith(";PWD=***")
    assert PASSWORD not in text
    assert text.replace(";PWD=***", "") == connection_string(INSTANCE, None)


def test_certificate_notes_name_the_risk() -> None:
    assert "FreeTDS checks the server certificate only when freetds.conf sets 'ca file'" in (
        certificate_note(INSTANCE) or "")
    trusting = dataclasses.replace(INSTANCE, trust_server_certificate=True)
    assert "any server certificate is accepted" in (certificate_note(trusting) or "")
    plain = dataclasses.replace(INSTANCE, encrypt=False)
    assert "not authenticated" in (certificate_note(plain) or "")
    microsoft = dataclasses.replace(INSTANCE, odbc_driver="ODBC Driver 18 for SQL Server")
    assert certificate_note(microsoft) is None


def test_driver_tags_are_stripped_from_messages() -> None:
    assert clean_message(
        "[01000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]10 percent processed."
    ) == "10 percent processed."
    assert clean_message(
        "[42000] [FreeTDS][SQL Server]Cannot open backup device 'D:\\x [1].bak'. "
        "Operating system error 5(Access is denied.). (3201) (SQLExecDirectW)"
    ) == ("Cannot open backup device 'D:\\x [1].bak'. Operating system error 5(Access is "
          "denied.). (3201)")


# --- the executor ---


class DriverError(Exception):
    """Stands in for pyodbc.Error: args are (sqlstate, message)."""


@dataclasses.dataclass
class Result:
    """One step of a replay: what the cursor holds after execute() or a nextset()."""

    messages: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    columns: list[str] | None = None
    rows: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    error: DriverError | None = None


class ReplayCursor:
    """A cursor with pyodbc's execute/nextset/messages/description, replaying results."""

    def __init__(self, results: list[Result]) -> None:
        self._results = results
        self._index = -1
        self.executed: list[tuple[str, tuple[Any, ...]]] = []
        self.nextset_calls = 0
        self.closed = False
        self.messages: list[tuple[str, str]] = []
        self.description: list[tuple[str]] | None = None

    def _enter(self, index: int) -> bool:
        self._index = index
        if index >= len(self._results):
            self.messages, self.description = [], None
            return False
        result = self._results[index]
        self.messages = result.messages
        if result.error is not None:
            raise result.error
        self.description = None if result.columns is None else [(c,) for c in result.columns]
        return True

    def execute(self, sql: str, *params: Any) -> ReplayCursor:
        self.executed.append((sql, params))
        self._enter(0)
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._results[self._index].rows)

    def nextset(self) -> bool:
        self.nextset_calls += 1
        return self._enter(self._index + 1)

    def close(self) -> None:
        self.closed = True


class ReplayConnection:
    def __init__(self, results: list[Result]) -> None:
        self.cursor_obj = ReplayCursor(results)

    def cursor(self) -> ReplayCursor:
        return self.cursor_obj


def info(text: str) -> tuple[str, str]:
    return ("[01000] (3211)", f"[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]{text}")


def test_every_result_set_is_drained_and_every_message_logged_in_order() -> None:
    results = [
        Result(messages=[info("10 percent processed.")]),
        Result(messages=[info("20 percent processed."), info("30 percent processed.")]),
        Result(columns=["LogicalName", "FileId"], rows=[("Sales", 1), ("Sales_log", 2)]),
        Result(messages=[info("Processed 360 pages for database 'Sales'.")]),
        Result(messages=[info("BACKUP DATABASE successfully processed 361 pages.")]),
    ]
    connection = ReplayConnection(results)
    logged: list[str] = []
    result = SqlExecutor(connection, logged.append, (DriverError,)).run("BACKUP DATABASE x",
                                                                        ["p"])

    cursor = connection.cursor_obj
    assert cursor.executed == [("BACKUP DATABASE x", ("p",))]
    assert cursor.nextset_calls == len(results), "nextset() until it returned False"
    assert logged == [
        "10 percent processed.", "20 percent processed.", "30 percent processed.",
        "Processed 360 pages for database 'Sales'.",
        "BACKUP DATABASE successfully processed 361 pages.",
    ]
    assert result.messages == logged
    assert [rs.dicts() for rs in result.result_sets] == [
        [{"LogicalName": "Sales", "FileId": 1}, {"LogicalName": "Sales_log", "FileId": 2}]
    ]
    assert cursor.closed


def test_an_error_after_progress_keeps_the_messages_and_names_the_statement() -> None:
    results = [
        Result(messages=[info("50 percent processed.")]),
        Result(error=DriverError(
            "42000",
            f"[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Write on 'D:\\b.bak' "
            f"failed (login pitrflow, {PASSWORD}): 112(There is not enough space on the "
            "disk.) (3202) (SQLMoreResults)")),
    ]
    connection = ReplayConnection(results)
    logged: list[str] = []
    executor = SqlExecutor(connection, logged.append, (DriverError,), secrets=[PASSWORD])
    with pytest.raises(SqlServerStatementError) as caught:
        executor.run("BACKUP DATABASE x", what="full backup of Sales", hint="free space")

    error = caught.value
    assert error.message == (
        "full backup of Sales failed on the server: Write on 'D:\\b.bak' failed (login "
        "pitrflow, ***): 112(There is not enough space on the disk.) (3202)")
    assert error.hint == "free space"
    assert error.messages == ["50 percent processed."]
    assert PASSWORD not in error.one_line()
    assert isinstance(error, ServerError), "retried like any server error"
    assert connection.cursor_obj.closed


def test_scalar_and_query_read_the_first_result_set() -> None:
    rows = [Result(columns=["state_desc"], rows=[("ONLINE",)])]
    executor = SqlExecutor(ReplayConnection(rows), lambda _: None, (DriverError,))
    assert executor.scalar("SELECT state_desc FROM sys.databases WHERE name = ?", ["x"]) == (
        "ONLINE")
    empty = SqlExecutor(ReplayConnection([Result(columns=["a"], rows=[])]), lambda _: None)
    assert empty.scalar("SELECT 1 WHERE 1 = 0") is None
    assert empty.query("SELECT 1 WHERE 1 = 0") == []


# --- a real driver, no server ---


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_one_line_without_the_password(monkeypatch) -> None:
    pyodbc = pytest.importorskip("pyodbc")
    if "FreeTDS" not in pyodbc.drivers():
        pytest.skip("the FreeTDS ODBC driver is not installed (apt-get install unixodbc tdsodbc)")
    monkeypatch.setenv("PITR_TEST_MSSQL_PASSWORD", PASSWORD)
    instance = dataclasses.replace(INSTANCE, host="127.0.0.1", port=_closed_port())
    with pytest.raises(ServerError) as caught, open_session(instance):
        pass
    line = caught.value.one_line()
    assert line.startswith(f"error [server]: cannot connect to SQL Server 127.0.0.1:"
                           f"{instance.port} for instance sales:")
    assert "PWD=***" in line
    assert PASSWORD not in line
