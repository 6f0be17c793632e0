"""Derive baseline suites from the source database's own catalog.

Team suites cover what a team thought of; generated suites cover what every
restore must get right whatever the schema: no table lost rows, no key lost
its uniqueness, no NOT NULL column grew nulls, and the newest writes reached
the target time.  Facts are read from the *source*, so the restored copy is
judged against what it was restored from, not against itself.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pitrflow.quality.suites import ExpectationSpec, Suite, split_table_name

# Only aware timestamps can be compared to an aware target without guessing a
# zone; GX compares a naive bound against timestamptz values without warning
# and simply reports a failure, so other types are refused up front.  Each
# engine's facts reader names its own aware types (SQL Server: datetimeoffset).
POSTGRES_AWARE_TYPES: frozenset[str] = frozenset({"timestamp with time zone"})


@dataclass(frozen=True)
class TableFacts:
    """What the source said about one table at the moment it was read."""

    schema: str
    table: str
    row_count: int
    primary_key: tuple[str, ...] = ()
    not_null: tuple[str, ...] = ()
    column_types: dict[str, str] = field(default_factory=dict)

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"


def generate_suites(
    facts: Sequence[TableFacts],
    row_count_tolerance: float,
    freshness: Mapping[str, str],
    target_time: datetime,
    max_lag: timedelta,
    *,
    future_slack: timedelta = timedelta(minutes=1),
    aware_types: Collection[str] = POSTGRES_AWARE_TYPES,
) -> list[Suite]:
    """Build one baseline suite per table.

    `freshness` maps `schema.table` to a column whose newest value
    must lie in [target_time - max_lag, target_time + future_slack]; the slack
    absorbs clock skew between the writers and the recovery target.  Row
    counts only get a lower bound: the source keeps growing after the target,
    so the restored copy may hold fewer rows than counted, within tolerance,
    but a table that lost more than that lost data.  A configured table that
    was empty at the source gets no freshness check, since no row can be new.
    A freshness column must be of one of `aware_types` (the source engine's
    zone-aware timestamp types, as its facts reader names them).
    """
    if target_time.tzinfo is None or target_time.utcoffset() is None:
        raise ValueError("target_time must be timezone-aware (a naive bound fails GX silently)")
    if not 0.0 <= row_count_tolerance < 1.0:
        raise ValueError(f"row_count_tolerance must be in [0, 1), got {row_count_tolerance}")
    if max_lag < timedelta(0) or future_slack < timedelta(0):
        raise ValueError("max_lag and future_slack must not be negative")
    by_name = {f.qualified_table: f for f in facts}
    fresh_columns = _check_freshness_config(freshness, by_name, aware_types)
    return [
        _suite_for(
            f,
            row_count_tolerance,
            fresh_columns.get(f.qualified_table),
            target_time,
            max_lag,
            future_slack,
        )
        for f in facts
    ]


def _check_freshness_config(
    freshness: Mapping[str, str],
    by_name: Mapping[str, TableFacts],
    aware_types: Collection[str],
) -> dict[str, str]:
    checked: dict[str, str] = {}
    for qualified, column in freshness.items():
        schema, table = split_table_name(qualified)
        facts = by_name.get(f"{schema}.{table}")
        if facts is None:
            raise ValueError(f"freshness: table {qualified!r} is not among the source's tables")
        type_name = facts.column_types.get(column)
        if type_name is None:
            raise ValueError(f"freshness: {qualified} has no column {column!r}")
        if type_name not in aware_types:
            allowed = " or ".join(sorted(aware_types))
            raise ValueError(
                f"freshness: {qualified}.{column} is {type_name}; only {allowed} "
                "can be compared to the aware target time without guessing a zone"
            )
        checked[facts.qualified_table] = column
    return checked


def _suite_for(
    facts: TableFacts,
    tolerance: float,
    fresh_column: str | None,
    target_time: datetime,
    max_lag: timedelta,
    future_slack: timedelta,
) -> Suite:
    # The epsilon keeps 100 * (1 - 0.05) from flooring to 94 in binary floats.
    min_rows = max(0, math.floor(facts.row_count * (1.0 - tolerance) + 1e-9))
    specs = [
        ExpectationSpec(
            "expect_table_row_count_to_be_between",
            {"min_value": min_rows, "max_value": None},
            _meta("row_count", source_rows=facts.row_count, tolerance=tolerance),
        )
    ]
    pk = facts.primary_key
    if len(pk) == 1:
        specs.append(
            ExpectationSpec(
                "expect_column_values_to_be_unique", {"column": pk[0]}, _meta("primary_key")
            )
        )
    elif len(pk) > 1:
        specs.append(
            ExpectationSpec(
                "expect_compound_columns_to_be_unique",
                {"column_list": list(pk)},
                _meta("primary_key"),
            )
        )
    # PK columns first so the report reads key checks together; a dict keeps
    # each column once (GX would drop a repeated identical expectation anyway).
    for column in dict.fromkeys([*pk, *facts.not_null]):
        reason = "primary_key" if column in pk else "not_null"
        specs.append(
            ExpectationSpec(
                "expect_column_values_to_not_be_null", {"column": column}, _meta(reason)
            )
        )
    if fresh_column is not None and facts.row_count > 0:
        specs.append(
            ExpectationSpec(
                "expect_column_max_to_be_between",
                {
                    "column": fresh_column,
                    "min_value": target_time - max_lag,
                    "max_value": target_time + future_slack,
                },
                _meta(
                    "freshness",
                    target_time=target_time.isoformat(),
                    max_lag_seconds=max_lag.total_seconds(),
                ),
            )
        )
    return Suite(
        name=f"pitrflow.generated.{facts.qualified_table}",
        schema=facts.schema,
        table=facts.table,
        expectations=specs,
    )


def _meta(check: str, **details: object) -> dict[str, object]:
    return {"pitrflow": {"generated": True, "check": check, **details}}
