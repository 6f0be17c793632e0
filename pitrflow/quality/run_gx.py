"""Run suites against the restored scratch instance with Great Expectations.

GX is imported inside `run_suites` because importing it costs about two
seconds, which every CLI command and flow import would otherwise pay.  The
context is ephemeral: the drill's scratch instance is thrown away after the
run, so nothing about it should be persisted except the evidence written to
`data_docs_dir`.

Every string that leaves this module (report rows, error messages, evidence
files) is scrubbed of the connection password, because drill reports end up
in Prefect logs and artefact stores that many people can read.

PostgreSQL goes through GX's dedicated Postgres datasource; SQL Server (an
``mssql+pyodbc`` URL, usually ``mssql+pyodbc:///?odbc_connect=<encoded ODBC
string>``) through GX's generic SQL datasource.  Such a URL carries the
password inside a percent-encoded, ODBC-brace-escaped attribute that no URL
parser hands back, so callers pass the password in ``secrets``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pitrflow.quality.redact import Redactor
from pitrflow.quality.suites import ExpectationSpec, Suite, column_label

_DATASOURCE = "restored"
_DOCS_SITE = "pitrflow_evidence"
_OBSERVED_MAX = 160
_DRIVERLESS_SCHEMES = {"postgres", "postgresql"}
_POSTGRES_DRIVER = "postgresql+psycopg"
_SQLSERVER_DRIVER = "mssql+pyodbc"
_ODBC_PASSWORD = re.compile(r"(?:^|;)\s*PWD\s*=", re.IGNORECASE)
_POSITION_KEY = "pitrflow_position"


class QualityRunError(RuntimeError):
    """GX could not even start: the instance is unreachable or the URL unusable."""


@dataclass(frozen=True)
class ResultRow:
    """One expectation's verdict, short enough for a log line.

    A generated expectation also says which table it guards, which check it
    is, the baseline its bounds came from and the bounds themselves (from its
    meta), so a failure names the table and the reference it missed.
    """

    suite: str
    expectation_type: str
    column: str | None
    success: bool
    observed: str
    table: str = ""
    check: str = ""
    baseline: str = ""
    bounds: str = ""

    def one_line(self) -> str:
        verdict = "ok" if self.success else "FAILED"
        where = f"({self.column})" if self.column else ""
        line = f"{verdict} {self.suite}: {self.expectation_type}{where} observed={self.observed}"
        if self.bounds:
            line += f" expected {self.bounds}"
        if self.baseline:
            line += f" (reference: {self.baseline})"
        return line


@dataclass
class SuiteRunReport:
    """All verdicts of one drill run, plus where the full evidence went."""

    rows: list[ResultRow] = field(default_factory=list)
    evidence_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        """True only if something was checked and everything passed.

        A run with no rows proves nothing about the restore, so it is not a pass.
        """
        return bool(self.rows) and all(row.success for row in self.rows)

    @property
    def failures(self) -> list[ResultRow]:
        return [row for row in self.rows if not row.success]

    def summary(self) -> str:
        head = f"{len(self.rows) - len(self.failures)}/{len(self.rows)} expectations passed"
        return "\n".join([head, *(row.one_line() for row in self.failures)])


def run_suites(
    sqlalchemy_url: str,
    suites: Sequence[Suite],
    data_docs_dir: Path | None = None,
    *,
    secrets: Iterable[str] = (),
    generic_sql: bool = False,
) -> SuiteRunReport:
    """Validate each suite against its table and collect one row per expectation.

    A PostgreSQL URL must name a TCP host and port (GX rejects socket-only
    URLs); `postgresql://` is rewritten to the psycopg 3 driver, the only one
    this project installs.  An `mssql+pyodbc` URL goes through GX's generic SQL
    datasource, as does PostgreSQL when `generic_sql` is set (which is how the
    generic path is tested without a SQL Server).  `secrets` are redacted from
    everything this returns or raises, in every spelling (see `Redactor`);
    passwords in the URL's user-info or `password=` are learned on top.

    A suite whose table cannot be read, or an expectation GX rejects as
    misconfigured, yields failed rows rather than an exception, so one bad
    table cannot hide the verdicts on all the others.  When `data_docs_dir` is
    given, GX data docs plus the raw JSON validation results are written there
    as drill evidence; note they may contain sample values of failing rows.
    """
    url, redact, postgres = _prepare_url(sqlalchemy_url, secrets)
    names = [s.name for s in suites]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"suite names must be unique; repeated: {', '.join(duplicates)}")

    context = _ephemeral_context(data_docs_dir)
    try:
        if postgres and not generic_sql:
            datasource = context.data_sources.add_postgres(_DATASOURCE, connection_string=url)
        else:
            datasource = _add_generic(context, url)
    except Exception as exc:  # GX wraps driver errors in several unrelated types.
        raise QualityRunError(
            redact(f"cannot connect GX to the restored instance: {_first_line(exc)}")
        ) from None

    report = SuiteRunReport(evidence_dir=data_docs_dir)
    results: dict[str, Any] = {}
    try:
        batches: dict[str, Any] = {}
        with _without_batch_hint():
            for suite in suites:
                report.rows.extend(_run_one(context, datasource, batches, suite, redact,
                                            results))
    finally:
        try:
            datasource.get_engine().dispose()
        except Exception as exc:  # noqa: BLE001 - cleanup must not mask the verdicts
            report.warnings.append(redact(f"could not close GX connections: {exc}"))

    if data_docs_dir is not None:
        with _without_batch_hint():
            _write_evidence(context, Path(data_docs_dir), report, results, redact)
    return report


@contextlib.contextmanager
def _without_batch_hint() -> Iterator[None]:
    """Drop GX's printed hint that a query lacks {batch}, and nothing else it prints.

    A test query reads the tables it names on purpose; GX prints the hint each
    time it validates one, which would flood the drill's log.
    """
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        kept = [line for line in buffer.getvalue().splitlines(keepends=True)
                if "{batch} parameter" not in line
                and "data outside the configured batch" not in line]
        if kept:
            sys.stdout.write("".join(kept))


def _add_generic(context: Any, url: str) -> Any:
    from great_expectations.datasource.fluent.interfaces import GxDatasourceWarning

    with warnings.catch_warnings():
        # GX suggests its Postgres datasource when the generic one is chosen on
        # purpose for a PostgreSQL URL; the choice is deliberate (tests).
        warnings.simplefilter("ignore", GxDatasourceWarning)
        return context.data_sources.add_sql(_DATASOURCE, connection_string=url)


def _prepare_url(raw: str, given: Iterable[str] = ()) -> tuple[str, Redactor, bool]:
    """Check the URL, pin the driver, and learn every secret to redact.

    Returns the URL to hand GX, the redactor, and whether it is PostgreSQL.
    The URL is re-rendered by SQLAlchemy so the password (and for SQL Server
    the whole ODBC string) is percent-encoded: GX treats a literal `$` in a
    connection string as a config variable.
    """
    from sqlalchemy.engine import make_url

    explicit = [s for s in given if s]
    secrets = list(explicit)
    parts = urlsplit(raw)
    try:
        learned = [parts.password or ""]
    except ValueError:  # a malformed port: nothing more to learn, make_url will refuse
        learned = []
    learned += [v for k, v in parse_qsl(parts.query) if k == "password"]
    secrets += learned + [unquote(s) for s in learned]
    redact = Redactor(secrets)

    scheme, sep, rest = raw.partition("://")
    if not sep:
        raise ValueError(redact(f"not a URL: {raw!r}"))
    if scheme in _DRIVERLESS_SCHEMES:
        raw = f"{_POSTGRES_DRIVER}://{rest}"
    try:
        url = make_url(raw)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several types
        raise ValueError(redact(f"cannot parse database URL: {exc}")) from None
    if url.password:
        secrets.append(str(url.password))
        redact = Redactor(secrets)
    if url.drivername == _POSTGRES_DRIVER:
        if not url.host or url.port is None:
            raise ValueError(
                redact(
                    f"database URL must name a TCP host and port (GX rejects socket-only URLs): "
                    f"{url.render_as_string(hide_password=True)}"
                )
            )
        return url.render_as_string(hide_password=False), redact, True
    if url.drivername == _SQLSERVER_DRIVER:
        odbc = url.query.get("odbc_connect")
        if isinstance(odbc, tuple):
            raise ValueError("database URL names odbc_connect more than once")
        if not odbc and not url.host:
            raise ValueError("an mssql+pyodbc URL needs odbc_connect=... or a host")
        if odbc and _ODBC_PASSWORD.search(odbc) and not explicit:
            # The password inside odbc_connect is ODBC-escaped and percent-encoded;
            # without it in `secrets` no error text could be trusted to hide it.
            raise ValueError(
                "the odbc_connect string holds PWD=...; pass the password in secrets= "
                "so it can be redacted"
            )
        return url.render_as_string(hide_password=False), redact, False
    raise ValueError(
        f"database URL must use {_POSTGRES_DRIVER} or {_SQLSERVER_DRIVER}, not {url.drivername}"
    )


def _ephemeral_context(data_docs_dir: Path | None) -> Any:
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # tqdm bars would interleave with the flow's logs on every metric batch.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # The default site points at a fresh temp dir; evidence goes only where asked.
    for site in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(site)
    if data_docs_dir is not None:
        Path(data_docs_dir).mkdir(parents=True, exist_ok=True)
        context.add_data_docs_site(
            _DOCS_SITE,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(data_docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def _run_one(
    context: Any,
    datasource: Any,
    batches: dict[str, Any],
    suite: Suite,
    redact: Redactor,
    results: dict[str, Any],
) -> list[ResultRow]:
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    asset_name = suite.qualified_table if suite.batch_query is None else f"query {suite.name}"
    batch = batches.get(asset_name)
    if batch is None:
        try:
            # A query asset, not add_table_asset: GX lower-cases an unquoted
            # schema_name (and mangles a quoted one), so "Ops"."Audit Log" is
            # unreachable that way, and schema_name is deprecated since 1.14.
            preparer = datasource.get_engine().dialect.identifier_preparer
            query = suite.batch_query or table_query(preparer, suite.schema, suite.table)
            asset = datasource.add_query_asset(asset_name, query=query)
            batch = asset.add_batch_definition_whole_table("whole_table")
        except Exception as exc:  # noqa: BLE001 - reported as failed rows below
            batch = exc
        batches[asset_name] = batch
    if isinstance(batch, Exception):
        why = redact(f"not run: {_first_line(batch)}")
        return [_row(suite.name, spec, False, why) for spec in suite.expectations]

    gx_suite = ExpectationSuite(name=suite.name)
    # Each slot is either a finished row (the spec was rejected) or the
    # position GX will echo back in the result's meta; results come back in
    # GX's own order, and the re-fetched suite has new objects, so the
    # position in meta is the only stable link from verdict to spec.
    slots: list[ResultRow | int] = []
    for position, spec in enumerate(suite.expectations):
        meta = {**spec.meta, _POSITION_KEY: position}
        try:
            config = ExpectationConfiguration(type=spec.type, kwargs=spec.kwargs, meta=meta)
            # add_expectation, not add_expectation_configuration: the latter
            # upserts by type+column, silently dropping e.g. a second bound on
            # the same column.
            gx_suite.add_expectation(config.to_domain_obj())
        except Exception as exc:  # noqa: BLE001 - a bad team kwarg fails its own row
            slots.append(_row(suite.name, spec, False, redact(f"invalid: {_first_line(exc)}")))
            continue
        slots.append(position)
    if not gx_suite.expectations:
        return [slot for slot in slots if isinstance(slot, ResultRow)]

    try:
        gx_suite = context.suites.add(gx_suite)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
        )
        result = definition.run(result_format="SUMMARY")
    except Exception as exc:  # noqa: BLE001 - reported as failed rows
        why = redact(f"not run: {_first_line(exc)}")
        return [_row(suite.name, spec, False, why) for spec in suite.expectations]
    results[suite.name] = result

    by_position = {(r.expectation_config.meta or {}).get(_POSITION_KEY): r for r in result.results}
    rows: list[ResultRow] = []
    for slot in slots:
        if isinstance(slot, ResultRow):
            rows.append(slot)
            continue
        verdict = by_position.get(slot)
        if verdict is None:
            continue  # an exact duplicate that GX merged into an earlier expectation
        config = verdict.expectation_config
        rows.append(
            ResultRow(
                suite=suite.name,
                expectation_type=config.type,
                column=column_label(config.kwargs),
                success=bool(verdict.success),
                observed=redact(_observed(verdict)),
                **_explained(config.meta),
            )
        )
    return rows


def _explained(meta: Any) -> dict[str, str]:
    """The table, check, baseline and bounds a generated expectation carries in its meta."""
    details = (meta or {}).get("pitrflow") if isinstance(meta, dict) else None
    if not isinstance(details, dict):
        return {}
    return {name: str(details[name]) for name in ("table", "check", "baseline", "bounds")
            if details.get(name) is not None}


def table_query(preparer: Any, schema: str, table: str) -> str:
    """`SELECT * FROM schema.table`, quoted by the engine's own dialect.

    `preparer` is a SQLAlchemy dialect's identifier_preparer: PostgreSQL writes
    "a""b", T-SQL [a]]b].  GX hands a query asset's text to SQLAlchemy's text()
    twice (the batch is compiled to a string, then wrapped in text() again), and
    text() reads ":name" as a bind parameter and un-escapes one backslash per
    pass, so each colon goes in as two backslashes and a colon.  Drivers with
    %-style parameters (psycopg) double every "%" on each pass, which no escape
    survives; PostgreSQL's Unicode form U&"..." spells such a name without "%".
    """
    percents = bool(getattr(preparer, "_double_percents", False))
    postgres = preparer.dialect.name == "postgresql"

    def quote(name: str) -> str:
        if percents and "%" in name:
            if not postgres:
                raise ValueError(f"identifier {name!r}: '%' cannot be queried through GX here")
            escaped = "".join(
                "\\\\" if c == "\\" else f"\\{ord(c):04X}" if c in '%:"' else c for c in name
            )
            return f'U&"{escaped}"'
        return str(preparer.quote_identifier(name)).replace(":", "\\\\:")

    return f"SELECT * FROM {quote(schema)}.{quote(table)}"


def _row(suite: str, spec: ExpectationSpec, success: bool, observed: str) -> ResultRow:
    return ResultRow(suite, spec.type, spec.column, success, _shorten(observed),
                     **_explained(spec.meta))


def _observed(verdict: Any) -> str:
    """Summarise a GX result as one short string without copying row samples.

    Samples of unexpected values can be customer data; they stay in the
    evidence files and out of logs.
    """
    error = _exception_message(verdict.exception_info)
    if error:
        return _shorten(f"error: {error}")
    result = verdict.result or {}
    if "observed_value" in result:
        return _shorten(_format_value(result["observed_value"]))
    if "unexpected_count" in result:
        text = f"{result['unexpected_count']} unexpected"
        if result.get("element_count") is not None:
            text += f" of {result['element_count']}"
        return _shorten(text)
    return ""


def _exception_message(info: Any) -> str | None:
    # GX reports either one flat dict or a dict per failed metric.
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "exception")
    return None


def _format_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _OBSERVED_MAX else text[: _OBSERVED_MAX - 3] + "..."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return _shorten(text.splitlines()[0] if "\n" in text else text)


def _write_evidence(
    context: Any,
    directory: Path,
    report: SuiteRunReport,
    results: dict[str, Any],
    redact: Redactor,
) -> None:
    """Write raw JSON results first, then data docs, then scrub everything.

    JSON goes first because it is what an auditor can diff; data docs are a
    convenience, so a rendering failure becomes a warning, not a lost run.
    """
    json_dir = directory / "validation_results"
    json_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for name, result in results.items():
        text = json.dumps(result.to_json_dict(), indent=2, sort_keys=True, default=str)
        stem = _file_safe(name)
        # Distinct suite names can sanitise alike ("a b", "a_b"); never overwrite.
        unique, n = stem, 1
        while unique in used:
            n += 1
            unique = f"{stem}-{n}"
        used.add(unique)
        (json_dir / f"{unique}.json").write_text(redact(text), encoding="utf-8")
    summary = {
        "success": report.success,
        "rows": [asdict(row) for row in report.rows],
        "warnings": report.warnings,
    }
    (directory / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    try:
        context.build_data_docs(site_names=[_DOCS_SITE])
    except Exception as exc:  # noqa: BLE001 - evidence is best effort
        report.warnings.append(redact(f"data docs not built: {_first_line(exc)}"))
    for path in directory.rglob("*"):
        if path.suffix in {".html", ".json"} and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            scrubbed = redact(text)
            if scrubbed != text:
                path.write_text(scrubbed, encoding="utf-8")


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "suite"
