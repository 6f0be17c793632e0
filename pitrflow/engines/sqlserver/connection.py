"""The one door to a SQL Server: an ODBC connection string, and an executor for T-SQL.

BACKUP and RESTORE cannot run inside a transaction, and the server sends their
progress (``STATS``) as informational messages between result sets: a client that
stops reading early can cut the statement short.  So every connection here is opened
with ``autocommit=True``, and ``SqlExecutor.run`` reads every result set
(``cursor.nextset()`` until it returns False), passing each message to a log
callback.  pyodbc is imported only when a connection is opened, so planning and
dry runs work on a worker without it.

The password goes into ``PWD`` only in the string handed to ``pyodbc.connect`` (and
the same string inside ``sqlalchemy_url``, for the drill's GX checks); everything
printed or raised uses ``redacted_connection_string`` or has the password replaced
by ``***``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from pitrflow.config import InstanceConfig
from pitrflow.errors import ServerError, ToolNotFoundError
from pitrflow.secrets import instance_password

log = logging.getLogger("pitrflow.sqlserver")

FREETDS_TDS_VERSION = "7.4"
"""SQL Server 2012's protocol and the newest Debian 12's FreeTDS 1.3 speaks; pinned so
FreeTDS does not negotiate down to a version that hands newer types back as text."""

LOGIN_TIMEOUT_SECONDS = 30
_MIN_REDACTED = 4
_DRIVER_TAG = re.compile(
    r"\[(?:[0-9A-Z]{5}|Microsoft|FreeTDS|unixODBC|SQL Server|ODBC [^\]]*)\]\s*")
"""The ``[01000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]`` tags drivers
put before a message; brackets in the server's own words are left alone."""
_ODBC_CALL = re.compile(r"\s*\(SQL[A-Za-z]+\)")


def odbc_value(value: str) -> str:
    """A connection-string value, braced when ODBC would otherwise misread it.

    ODBC ends a value at ``;`` and treats a leading ``{`` as an opening brace, so any
    value holding ``;``, braces, ``=`` or edge spaces is written as ``{...}`` with
    ``}`` doubled.  Passwords are always braced: their content is never guessed at.
    """
    if "\x00" in value:
        raise ValueError("a NUL character cannot appear in an ODBC connection string")
    if value and not re.search(r"[;{}=\s]", value):
        return value
    return "{" + value.replace("}", "}}") + "}"


def _braced(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a NUL character cannot appear in an ODBC connection string")
    return "{" + value.replace("}", "}}") + "}"


def is_freetds(driver: str) -> bool:
    """FreeTDS takes Server/Port/TDS_Version/Encryption; Microsoft's drivers do not."""
    return "freetds" in driver.lower() or driver.endswith("libtdsodbc.so")


def _parts(instance: InstanceConfig, database: str) -> list[tuple[str, str]]:
    """Every connection attribute except PWD, in the order drivers expect them."""
    driver = instance.odbc_driver
    parts = [("DRIVER", _braced(driver))]
    if is_freetds(driver):
        parts += [
            ("SERVER", odbc_value(instance.host)),
            ("PORT", str(instance.port)),
            ("TDS_Version", FREETDS_TDS_VERSION),
            ("ClientCharset", "UTF-8"),
            # FreeTDS 1.3 has no TrustServerCertificate: it checks the certificate only
            # when freetds.conf names a "ca file" (see certificate_note).
            ("Encryption", "require" if instance.encrypt else "request"),
        ]
    else:
        parts += [
            ("SERVER", odbc_value(f"tcp:{instance.host},{instance.port}")),
            ("Encrypt", "yes" if instance.encrypt else "no"),
            ("TrustServerCertificate", "yes" if instance.trust_server_certificate else "no"),
        ]
    parts += [
        ("DATABASE", odbc_value(database)),
        ("UID", _braced(instance.user)),
        ("APP", "pitrflow"),
    ]
    return parts


def connection_string(instance: InstanceConfig, password: str | None,
                      database: str = "master") -> str:
    """The string for ``pyodbc.connect``: the only place the password is written.

    ``database`` defaults to master: RESTORE cannot replace the database a session
    is using, and BACKUP does not need to be in the database it copies.
    """
    parts = _parts(instance, database)
    if password is not None:
        parts.append(("PWD", _braced(password)))
    return ";".join(f"{key}={value}" for key, value in parts)


def redacted_connection_string(instance: InstanceConfig, database: str = "master") -> str:
    """The same string with ``PWD=***``: safe for logs, errors and artifacts."""
    parts = _parts(instance, database) + [("PWD", "***")]
    return ";".join(f"{key}={value}" for key, value in parts)


def sqlalchemy_url(instance: InstanceConfig, password: str | None, database: str) -> str:
    """An ``mssql+pyodbc`` URL to ``database``, for SQLAlchemy (the drill's GX checks).

    The whole ODBC string of ``connection_string`` goes in ``odbc_connect``,
    percent-encoded, so GX connects with exactly the driver, encryption and
    certificate settings every other connection uses, and no character of the
    password is reinterpreted by URL parsing.  The URL holds the password: pass
    the password as a secret to whatever may print it (``run_suites(secrets=...)``).
    """
    return "mssql+pyodbc:///?odbc_connect=" + quote_plus(
        connection_string(instance, password, database), safe="")


def certificate_note(instance: InstanceConfig) -> str | None:
    """What the encryption settings do not protect against, said once per connection."""
    if not instance.encrypt:
        return (f"instance {instance.name}: encrypt = false; the connection is encrypted "
                "only if the server insists, and the server is not authenticated")
    if instance.trust_server_certificate:
        return (f"instance {instance.name}: trust_server_certificate = true; traffic is "
                "encrypted but any server certificate is accepted (no protection against "
                "an impostor)")
    if is_freetds(instance.odbc_driver):
        return (f"instance {instance.name}: FreeTDS checks the server certificate only when "
                "freetds.conf sets 'ca file' (for example 'ca file = system' and 'check "
                "certificate hostname = yes' in [global])")
    return None


def clean_message(text: str) -> str:
    """A driver message without its ``[vendor][driver][SQL Server]`` prefix."""
    return " ".join(_ODBC_CALL.sub("", _DRIVER_TAG.sub("", str(text))).split())


def _error_text(exc: BaseException) -> str:
    """The server's words from a driver exception (pyodbc: ``(sqlstate, message)``)."""
    args = getattr(exc, "args", ())
    text = args[1] if len(args) >= 2 and isinstance(args[1], str) else str(exc)
    return clean_message(text)


class SqlServerStatementError(ServerError):
    """A statement failed on the server; ``server_text`` holds the server's words."""

    def __init__(self, message: str, hint: str | None, server_text: str,
                 messages: Sequence[str]) -> None:
        super().__init__(message, hint)
        self.server_text = server_text
        self.messages = list(messages)


@dataclass
class ResultSet:
    """One result set: column names and rows as tuples."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass
class StatementResult:
    """Everything one statement sent back: its result sets and its messages."""

    sql: str
    result_sets: list[ResultSet] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


class SqlExecutor:
    """Runs one statement at a time on an autocommit connection, reading everything.

    ``connection`` is a DB-API connection whose cursors have pyodbc's ``nextset`` and
    ``messages``; ``driver_errors`` are the exception types the driver raises for a
    server error (pyodbc.Error), turned into ``SqlServerStatementError``.
    """

    def __init__(
        self,
        connection: Any,
        on_message: Callable[[str], None] | None = None,
        driver_errors: tuple[type[BaseException], ...] = (),
        secrets: Sequence[str] = (),
    ) -> None:
        self.connection = connection
        self.on_message = on_message or (lambda text: log.info("%s", text))
        self.driver_errors = driver_errors
        # Very short secrets are not redacted: replacing "x" everywhere garbles every
        # message and hides nothing a guess would not find.
        self._secrets = [s for s in secrets if len(s) >= _MIN_REDACTED]
        self.history: list[str] = []

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _take_messages(self, cursor: Any, into: list[str]) -> None:
        """Pass on what the driver collected since the last execute/nextset."""
        for item in getattr(cursor, "messages", None) or ():
            text = item[1] if isinstance(item, tuple) and len(item) >= 2 else item
            cleaned = self._redact(clean_message(str(text)))
            if cleaned:
                into.append(cleaned)
                self.on_message(cleaned)

    def run(self, sql: str, params: Sequence[Any] = (), what: str | None = None,
            hint: str | None = None) -> StatementResult:
        """Execute ``sql`` and drain every result set; raise naming ``what`` on failure."""
        result = StatementResult(sql=sql)
        self.history.append(sql)
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, *params)
            while True:
                self._take_messages(cursor, result.messages)
                if cursor.description is not None:
                    columns = [str(column[0]) for column in cursor.description]
                    rows = [tuple(row) for row in cursor.fetchall()]
                    result.result_sets.append(ResultSet(columns, rows))
                if not cursor.nextset():
                    self._take_messages(cursor, result.messages)
                    break
        except self.driver_errors as exc:
            self._take_messages(cursor, result.messages)
            text = self._redact(_error_text(exc))
            doing = what or sql.split(None, 2)[0].lower()
            raise SqlServerStatementError(
                f"{doing} failed on the server: {text}",
                hint or "read the server's message; the statement is in the run log",
                text,
                result.messages,
            ) from None
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
        return result

    def query(self, sql: str, params: Sequence[Any] = (), what: str | None = None) -> list[
            dict[str, Any]]:
        """Rows of the first result set as dicts (column name to value)."""
        result = self.run(sql, params, what=what)
        return result.result_sets[0].dicts() if result.result_sets else []

    def scalar(self, sql: str, params: Sequence[Any] = (), what: str | None = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        result = self.run(sql, params, what=what)
        for result_set in result.result_sets:
            if result_set.rows:
                return result_set.rows[0][0]
        return None


def _pyodbc() -> Any:
    try:
        import pyodbc
    except ImportError:
        raise ToolNotFoundError(
            "pyodbc is not installed; the sqlserver engine needs it",
            "pip install 'pitrflow[sqlserver]' and an ODBC driver (apt-get install "
            "unixodbc tdsodbc, or Microsoft's ODBC Driver 18)",
        ) from None
    return pyodbc


@contextlib.contextmanager
def open_session(
    instance: InstanceConfig,
    on_message: Callable[[str], None] | None = None,
    statement_timeout: int | None = None,
) -> Iterator[SqlExecutor]:
    """An executor on a fresh autocommit connection to master, closed afterwards.

    ``statement_timeout`` (seconds, 0 = none) defaults to the instance's
    ``backup_timeout_seconds``: a BACKUP or RESTORE may legitimately run for hours.
    """
    # The configuration first: a missing password is the user's to fix whatever the driver.
    password = instance_password(instance)
    pyodbc = _pyodbc()
    note = certificate_note(instance)
    if note:
        log.warning("%s", note)
    try:
        connection = pyodbc.connect(connection_string(instance, password), autocommit=True,
                                    timeout=LOGIN_TIMEOUT_SECONDS)
    except pyodbc.Error as exc:
        text = _error_text(exc)
        if password and len(password) >= _MIN_REDACTED:
            text = text.replace(password, "***")
        drivers = ", ".join(pyodbc.drivers()) or "none"
        raise ServerError(
            f"cannot connect to SQL Server {instance.host}:{instance.port} for instance "
            f"{instance.name}: {text}",
            f"check host, port, user, password_env and odbc_driver (installed ODBC drivers: "
            f"{drivers}); connection: {redacted_connection_string(instance)}",
        ) from None
    try:
        connection.timeout = (instance.backup_timeout_seconds if statement_timeout is None
                              else statement_timeout)
        yield SqlExecutor(connection, on_message, (pyodbc.Error,), [password or ""])
    finally:
        with contextlib.suppress(Exception):
            connection.close()
