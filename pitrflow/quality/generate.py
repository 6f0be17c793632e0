"""Generated suites: what every restore must get right, whatever the schema.

Team suites cover what a team thought of; generated suites cover the rest:
no table lost rows, no key lost its uniqueness, no NOT NULL column grew
nulls, and the newest writes reached the target time.  The bounds come from
the *source* (`pitrflow.drill.bounds` plans them from the baselines recorded
either side of the target), so the restored copy is judged against what it
was restored from, not against itself.  Each expectation carries in its meta
the baseline and bounds it was built from, so its verdict explains itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pitrflow.drill.baseline import Baseline, TableBaseline
from pitrflow.drill.bounds import BoundSettings, TablePlan, plan_fallback
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
    """One suite per table, judged with the old rule against facts read now.

    `freshness` maps `schema.table` to a column whose newest value must lie in
    [target_time - max_lag, target_time + future_slack]; the slack absorbs
    clock skew between the writers and the recovery target.  Row counts only
    get a lower bound, (1 - tolerance) of the count.  A configured table that
    was empty gets no freshness check, since no row can be new.  A freshness
    column must be of one of `aware_types` (the source engine's zone-aware
    timestamp types, as its facts reader names them).  The drill uses this
    rule only when no baseline precedes the target (`drill.bounds`).
    """
    check_arguments(row_count_tolerance, target_time, max_lag, future_slack)
    fresh = check_freshness_config(freshness, facts, aware_types)
    reference = Baseline(
        instance="", engine="", origin="live", origin_id="", origin_time=datetime.now(UTC),
        read_from=target_time, read_to=target_time,
        tables=tuple(TableBaseline(f.schema, f.table, exact=f.row_count,
                                   primary_key=f.primary_key, not_null=f.not_null,
                                   column_types=dict(f.column_types)) for f in facts))
    settings = BoundSettings(row_count_tolerance, fresh, max_lag, future_slack)
    plan = plan_fallback(reference, target_time, settings, "no baseline is used")
    return suites_from_plan(plan.tables)


def check_arguments(row_count_tolerance: float, target_time: datetime, max_lag: timedelta,
                    future_slack: timedelta) -> None:
    if target_time.tzinfo is None or target_time.utcoffset() is None:
        raise ValueError("target_time must be timezone-aware (a naive bound fails GX silently)")
    if not 0.0 <= row_count_tolerance < 1.0:
        raise ValueError(f"row_count_tolerance must be in [0, 1), got {row_count_tolerance}")
    if max_lag < timedelta(0) or future_slack < timedelta(0):
        raise ValueError("max_lag and future_slack must not be negative")


def check_freshness_config(
    freshness: Mapping[str, str],
    facts: Sequence[TableFacts] | Sequence[TableBaseline],
    aware_types: Collection[str],
) -> dict[str, str]:
    """The configured freshness columns, checked against the source's tables and types."""
    by_name = {f.qualified_table: f for f in facts}
    checked: dict[str, str] = {}
    for qualified, column in freshness.items():
        schema, table = split_table_name(qualified)
        found = by_name.get(f"{schema}.{table}")
        if found is None:
            raise ValueError(f"freshness: table {qualified!r} is not among the source's tables")
        type_name = found.column_types.get(column)
        if type_name is None:
            raise ValueError(f"freshness: {qualified} has no column {column!r}")
        if type_name not in aware_types:
            allowed = " or ".join(sorted(aware_types))
            raise ValueError(
                f"freshness: {qualified}.{column} is {type_name}; only {allowed} "
                "can be compared to the aware target time without guessing a zone"
            )
        checked[found.qualified_table] = column
    return checked


def suites_from_plan(plans: Sequence[TablePlan]) -> list[Suite]:
    """One suite per planned table; a table the plan skips gets none."""
    return [_suite_for(plan) for plan in plans if plan.skipped is None]


def _suite_for(plan: TablePlan) -> Suite:
    specs = []
    table = plan.qualified_table
    if plan.rows is not None:
        specs.append(ExpectationSpec(
            "expect_table_row_count_to_be_between",
            {"min_value": plan.rows.min_value, "max_value": plan.rows.max_value},
            _meta("row_count", table, plan.baseline, plan.rows.text(), plan.rows.how),
        ))
    pk = plan.primary_key
    if len(pk) == 1:
        specs.append(ExpectationSpec("expect_column_values_to_be_unique", {"column": pk[0]},
                                     _meta("primary_key", table, plan.baseline)))
    elif len(pk) > 1:
        specs.append(ExpectationSpec("expect_compound_columns_to_be_unique",
                                     {"column_list": list(pk)},
                                     _meta("primary_key", table, plan.baseline)))
    # PK columns first so the report reads key checks together; a dict keeps
    # each column once (GX would drop a repeated identical expectation anyway).
    for column in dict.fromkeys([*pk, *plan.not_null]):
        reason = "primary_key" if column in pk else "not_null"
        specs.append(ExpectationSpec("expect_column_values_to_not_be_null", {"column": column},
                                     _meta(reason, table, plan.baseline)))
    if plan.freshness is not None:
        fresh = plan.freshness
        specs.append(ExpectationSpec(
            "expect_column_max_to_be_between",
            {"column": fresh.column, "min_value": fresh.min_value, "max_value": fresh.max_value},
            _meta("freshness", table, plan.baseline, fresh.text(), fresh.how),
        ))
    return Suite(name=f"pitrflow.generated.{table}", schema=plan.schema, table=plan.table,
                 expectations=specs)


def _meta(check: str, table: str, baseline: str, bounds: str = "",
          how: str = "") -> dict[str, object]:
    details: dict[str, object] = {"generated": True, "check": check, "table": table,
                                  "baseline": baseline}
    if bounds:
        details["bounds"] = bounds
    if how:
        details["how"] = how
    return {"pitrflow": details}
