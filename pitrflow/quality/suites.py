"""A small, GX-free model of an expectation suite, and the loader for team suites.

Suites are plain data so the drill can build, log and compare them without
paying for a Great Expectations import; `run_gx` turns them into GX objects
only at run time.  Team suites are JSON files under `checks/<instance>/`,
named `<schema>.<table>.json`, so a reviewer sees which table a file guards
from its name alone.  A test query is a `<name>.sql` file there: one SELECT
whose returned rows are the failures (GX's UnexpectedRowsExpectation), so a
team can state any rule it can write in SQL.  The loader is strict: a typo
in a suite that quietly checks nothing would make a broken restore look
healthy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The expectation types GX Core 1.24 ships (checked against GX's own registry
# by the integration test).  Kept as a literal so loading a suite never
# imports GX, and so a misspelt type fails at load time with the file named,
# not minutes later inside a GX run.
KNOWN_EXPECTATION_TYPES: frozenset[str] = frozenset(
    {
        "expect_column_distinct_values_to_be_in_set",
        "expect_column_distinct_values_to_contain_set",
        "expect_column_distinct_values_to_equal_set",
        "expect_column_kl_divergence_to_be_less_than",
        "expect_column_max_to_be_between",
        "expect_column_mean_to_be_between",
        "expect_column_median_to_be_between",
        "expect_column_min_to_be_between",
        "expect_column_most_common_value_to_be_in_set",
        "expect_column_pair_values_a_to_be_greater_than_b",
        "expect_column_pair_values_to_be_equal",
        "expect_column_pair_values_to_be_in_set",
        "expect_column_proportion_of_non_null_values_to_be_between",
        "expect_column_proportion_of_unique_values_to_be_between",
        "expect_column_quantile_values_to_be_between",
        "expect_column_stdev_to_be_between",
        "expect_column_sum_to_be_between",
        "expect_column_to_exist",
        "expect_column_type_to_be",
        "expect_column_unique_value_count_to_be_between",
        "expect_column_value_lengths_to_be_between",
        "expect_column_value_lengths_to_equal",
        "expect_column_value_z_scores_to_be_less_than",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_dateutil_parseable",
        "expect_column_values_to_be_decreasing",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_increasing",
        "expect_column_values_to_be_json_parseable",
        "expect_column_values_to_be_null",
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_be_unique",
        "expect_column_values_to_match_json_schema",
        "expect_column_values_to_match_like_pattern",
        "expect_column_values_to_match_like_pattern_list",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_match_regex_list",
        "expect_column_values_to_match_strftime_format",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_not_be_outliers",
        "expect_column_values_to_not_match_like_pattern",
        "expect_column_values_to_not_match_like_pattern_list",
        "expect_column_values_to_not_match_regex",
        "expect_column_values_to_not_match_regex_list",
        "expect_compound_columns_to_be_unique",
        "expect_multicolumn_sum_to_equal",
        "expect_multicolumn_values_to_be_equal",
        "expect_query_results_to_match_comparison",
        "expect_select_column_values_to_be_unique_within_record",
        "expect_table_column_count_to_be_between",
        "expect_table_column_count_to_equal",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_columns_to_match_set",
        "expect_table_row_count_to_be_between",
        "expect_table_row_count_to_equal",
        "expect_table_row_count_to_equal_other_table",
        "unexpected_rows_expectation",
    }
)

_SUITE_KEYS = frozenset({"name", "table", "expectations"})
_EXPECTATION_KEYS = frozenset({"type", "kwargs", "meta"})


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation as GX names it: its snake_case type plus keyword arguments.

    `meta` travels into GX's results untouched, so a generated check can say
    why it exists right next to its verdict in the evidence.
    """

    type: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def column(self) -> str | None:
        """The column(s) the expectation is about, for one-line reports."""
        return column_label(self.kwargs)


@dataclass(frozen=True)
class Suite:
    """Expectations about one table; the unit GX validates as one batch.

    `batch_query` replaces the table as the batch: a test query names its own
    tables, so it hangs on a one-row batch instead.
    """

    name: str
    schema: str
    table: str
    expectations: list[ExpectationSpec] = field(default_factory=list)
    batch_query: str | None = None

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"


def column_label(kwargs: Mapping[str, Any]) -> str | None:
    """Name the columns an expectation reads, whichever kwarg GX uses for them.

    Table-level expectations return None so reports can show them as such.
    """
    if isinstance(kwargs.get("column"), str):
        return kwargs["column"]
    if isinstance(kwargs.get("column_list"), list):
        return ",".join(str(c) for c in kwargs["column_list"])
    if "column_A" in kwargs and "column_B" in kwargs:
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    return None


def split_table_name(qualified: str) -> tuple[str, str]:
    """Split `schema.table` at the first dot; a bare name is refused, not guessed.

    Guessing `public` would let a suite silently validate the wrong table on
    an instance that keeps its data in another schema.
    """
    schema, dot, table = qualified.partition(".")
    if not dot or not schema or not table:
        raise ValueError(f"table {qualified!r} is not of the form 'schema.table'")
    return schema, table


def load_team_suites(checks_dir: Path, instance: str) -> list[Suite]:
    """Load every `checks/<instance>/<schema>.<table>.json` and `<name>.sql`, by file name.

    A missing directory means the team wrote no suites for this instance, which
    is allowed (generated suites still run); any malformed file aborts the load
    because half a team's checks is worse than a loud failure.
    """
    if not instance or instance in {".", ".."} or "/" in instance or "\\" in instance:
        raise ValueError(f"instance name {instance!r} cannot be used as a directory name")
    directory = Path(checks_dir) / instance
    if not directory.is_dir():
        return []
    suites: list[Suite] = []
    seen: dict[str, Path] = {}
    files = sorted([*directory.glob("*.json"), *directory.glob("*.sql")])
    for path in files:
        suite = _load_file(path) if path.suffix == ".json" else load_test_query(path)
        if suite.name in seen:
            raise ValueError(
                f"{path}: key 'name': suite name {suite.name!r} is also used by {seen[suite.name]}"
            )
        seen[suite.name] = path
        suites.append(suite)
    return suites


def _load_file(path: Path) -> Suite:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text: {exc.reason}") from None
    suite = suite_from_dict(data, origin=str(path))
    expected_file = f"{suite.qualified_table}.json"
    if path.name != expected_file:
        raise ValueError(
            f"{path}: key 'table': {suite.qualified_table!r} does not match the file name "
            f"(expected the file to be called {expected_file})"
        )
    return suite


def suite_from_dict(data: object, origin: str) -> Suite:
    """Validate one suite document; `origin` prefixes every error message."""
    if not isinstance(data, dict):
        raise ValueError(f"{origin}: the document must be a JSON object")
    unknown = sorted(set(data) - _SUITE_KEYS)
    if unknown:
        raise ValueError(
            f"{origin}: key {unknown[0]!r}: unknown key (allowed: name, table, expectations)"
        )
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{origin}: key 'name': must be a non-empty string")
    table = data.get("table")
    if not isinstance(table, str):
        raise ValueError(f"{origin}: key 'table': must be a string 'schema.table'")
    try:
        schema, table_name = split_table_name(table)
    except ValueError as exc:
        raise ValueError(f"{origin}: key 'table': {exc}") from None
    raw = data.get("expectations")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{origin}: key 'expectations': must be a non-empty list")
    specs = [
        _expectation_from_dict(item, f"{origin}: key 'expectations[{i}]")
        for i, item in enumerate(raw)
    ]
    return Suite(name=name, schema=schema, table=table_name, expectations=specs)


def _expectation_from_dict(item: object, where: str) -> ExpectationSpec:
    # `where` is "<file>: key 'expectations[i]" and each error closes the quote.
    if not isinstance(item, dict):
        raise ValueError(f"{where}': must be a JSON object")
    unknown = sorted(set(item) - _EXPECTATION_KEYS)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}': unknown key (allowed: type, kwargs, meta)")
    kind = item.get("type")
    if not isinstance(kind, str):
        raise ValueError(f"{where}.type': missing or not a string")
    if kind not in KNOWN_EXPECTATION_TYPES:
        raise ValueError(f"{where}.type': unknown expectation type {kind!r}")
    kwargs = item.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"{where}.kwargs': must be a JSON object")
    meta = item.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError(f"{where}.meta': must be a JSON object")
    return ExpectationSpec(type=kind, kwargs=dict(kwargs), meta=dict(meta))


TEST_QUERY_BATCH = "SELECT 1 AS pitrflow_test_query"
TEST_QUERY_TYPE = "unexpected_rows_expectation"
# SQLAlchemy's text() reads ":name" as a bind parameter (its own pattern, so
# exactly those are escaped) and GX fills "{batch}" with str.format.
_BIND_PARAM = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
_TRAILING = re.compile(r"[;\s]+$")
_QUERY_END = "/* end of test query */"
_QUERY_START = re.compile(r"(?is)^(select|with|values|table)\b")


def load_test_query(path: Path) -> Suite:
    """`checks/<instance>/<name>.sql`: a SELECT whose rows, if any, fail the drill.

    The suite is named `team.query.<name>`; the `--` comment lines before the
    query become its description.  The query runs exactly as written against
    the restored database: it reads the tables it names (no {batch}
    placeholder is needed), and braces and colons are escaped for GX.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text: {exc.reason}") from None
    query = _TRAILING.sub("", text.strip())
    lines = query.splitlines()
    header = 0
    while header < len(lines) and (not lines[header].strip()
                                   or lines[header].strip().startswith("--")):
        header += 1
    code = "\n".join(lines[header:]).strip()
    if not code:
        raise ValueError(f"{path}: the test query is empty (write one SELECT whose rows are "
                         "the failures)")
    if not _QUERY_START.match(code):
        raise ValueError(f"{path}: a test query must be one SELECT (or WITH ... SELECT) whose "
                         "rows are the failures")
    description = " ".join(line.strip()[2:].strip() for line in lines[:header]
                           if line.strip().startswith("--"))
    # GX wraps the query in "(...) AS alias" after stripping trailing blanks: a
    # block comment on a line of its own ends any "--" comment on the last line.
    escaped = (_BIND_PARAM.sub(r"\\:\1", query).replace("{", "{{").replace("}", "}}")
               + "\n" + _QUERY_END)
    meta: dict[str, Any] = {"pitrflow": {"check": "test_query", "file": path.name}}
    if description:
        meta["description"] = description
    return Suite(name=f"team.query.{path.stem}", schema="", table="",
                 expectations=[ExpectationSpec(TEST_QUERY_TYPE,
                                               {"unexpected_rows_query": escaped}, meta)],
                 batch_query=TEST_QUERY_BATCH)
