"""The bounds a restored table must meet, from the baselines either side of the target.

Pure: baselines and settings in, one `TablePlan` per table out, each saying
which baselines it came from and in words why its bounds are what they are.
A restore to time T holds what the source held at T, and the source at T lay
between the baseline recorded just before T and the one just after it:

- Rows: between the two counts (a table may grow or shrink between them).
  Equal exact counts give an exact bound.  An estimated count is widened by
  the tolerance either side; the row counters (inserted, deleted) widen the
  bound when rows were both inserted and deleted between the two, and a table
  rewritten in between (TRUNCATE) can have held anything from zero.  Those
  counters reach the statistics up to a second or so late, so they are taken
  from the next reference after the later baseline: cumulative counters read
  later can only count more of the activity in between, never less.
- Freshness: the newest value at the baseline before T, up to T itself.
- A table only one of the two baselines knows was created or dropped in
  between: it is named, and left unchecked.

With no baseline at or before T there is nothing to bound from below, so the
plan falls back to the old rule against the nearest later reference (the
first baseline after T, else the source as read at drill time): at least
(1 - tolerance) of its rows, the newest value within max_lag of T.  The
reference says so in words, and the drill never fails only because a
baseline is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pitrflow.drill.baseline import Baseline, TableBaseline, short_time

# A commit whose timestamp is at or before the target may take a moment to
# become visible to other sessions; a baseline read within this margin after
# the target is not trusted as "after" it.
VISIBILITY_MARGIN = timedelta(seconds=1)


@dataclass(frozen=True)
class BoundSettings:
    """What the instance's [drill] table says about bounds."""

    tolerance: float
    freshness: Mapping[str, str] = field(default_factory=dict)
    max_lag: timedelta = timedelta(hours=1)
    future_slack: timedelta = timedelta(minutes=1)


@dataclass(frozen=True)
class RowBounds:
    min_value: int
    max_value: int | None
    how: str

    def text(self) -> str:
        if self.max_value is None:
            return f">= {self.min_value}"
        if self.max_value == self.min_value:
            return f"= {self.min_value}"
        return f"{self.min_value}..{self.max_value}"


@dataclass(frozen=True)
class FreshBounds:
    column: str
    min_value: datetime
    max_value: datetime
    how: str

    def text(self) -> str:
        return f"{short_time(self.min_value)}..{short_time(self.max_value)}"


@dataclass(frozen=True)
class TablePlan:
    """The generated checks of one table, and where each bound came from."""

    schema: str
    table: str
    baseline: str
    primary_key: tuple[str, ...] = ()
    not_null: tuple[str, ...] = ()
    rows: RowBounds | None = None
    freshness: FreshBounds | None = None
    skipped: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class DrillReference:
    """What a drill judged the restore against, per table, and the sentence that says it."""

    target: datetime
    mode: str  # "baselines" | "fallback"
    statement: str
    tables: tuple[TablePlan, ...]
    before: str | None = None
    after: str | None = None


def choose_neighbours(candidates: Sequence[Baseline], target: datetime,
                      margin: timedelta = VISIBILITY_MARGIN,
                      ) -> tuple[Baseline | None, Baseline | None]:
    """The newest baseline wholly at or before `target`, and the oldest one after it."""
    before = max((b for b in candidates if b.read_to <= target),
                 key=lambda b: b.read_to, default=None)
    after = min((b for b in candidates if b.read_from >= target + margin),
                key=lambda b: b.read_from, default=None)
    return before, after


def _interval(t: TableBaseline, tolerance: float) -> tuple[int, int, str] | None:
    """The rows the table held at its baseline: exact, or an estimate widened both ways."""
    if t.exact is not None:
        return t.exact, t.exact, f"{t.exact} counted"
    known = [e for e in t.estimates if e >= 0]
    if not known:
        return None
    low, high = min(known), max(known)
    # The epsilons keep 100 * (1 - 0.05) from flooring to 94 in binary floats.
    lo = max(0, math.floor(low * (1.0 - tolerance) + 1e-9))
    hi = math.ceil(high * (1.0 + tolerance) - 1e-9)
    about = f"{low}" if low == high else f"{low}-{high}"
    return lo, hi, f"about {about} (estimate, +/-{tolerance:.0%})"


def _changes(before: TableBaseline, after: TableBaseline) -> tuple[int, int] | None:
    """Rows inserted and deleted between two baselines; None if unknown or reset."""
    if before.changes is None or after.changes is None:
        return None
    inserted = after.changes[0] - before.changes[0]
    deleted = after.changes[1] - before.changes[1]
    if inserted < 0 or deleted < 0:
        return None  # the counters were reset (a crash, pg_stat_reset): nothing to learn
    return inserted, deleted


def _rewritten(before: TableBaseline, after: TableBaseline) -> bool:
    return (before.rewrites is not None and after.rewrites is not None
            and before.rewrites != after.rewrites)


def row_bounds(before: TableBaseline, after: TableBaseline, tolerance: float,
               before_label: str = "the baseline before",
               after_label: str = "the baseline after",
               later: TableBaseline | None = None) -> RowBounds | None:
    """Rows the table can have held at any moment between two baselines; None if unknown.

    `later` is the table as a reference read after `after` saw it: its
    counters bound the inserts and deletes in between from above.
    """
    a = _interval(before, tolerance)
    b = _interval(after, tolerance)
    if a is None or b is None:
        return None
    lo, hi = min(a[0], b[0]), max(a[1], b[1])
    how = f"{a[2]} at {before_label}, {b[2]} at {after_label}"
    if a[0] == a[1] == b[0] == b[1]:
        how = f"exactly {lo} at both {before_label} and {after_label}"
    delta = _changes(before, later) if later is not None else None
    delta = delta or _changes(before, after)
    if _rewritten(before, after):
        # TRUNCATE (or a rewrite) in between: the table may have held none of its rows.
        cap = None if delta is None else max(hi, a[1] + delta[0])
        return RowBounds(0, cap, how + "; truncated or rewritten in between, so from 0")
    if delta is not None and delta[0] > 0 and delta[1] > 0:
        inserted, deleted = delta
        # Rows at T = rows before + some of the inserts - some of the deletes, and
        # rows after - the rest of them: both views hold, so their intersection does.
        mixed_lo = max(0, a[0] - deleted, b[0] - inserted)
        mixed_hi = min(a[1] + inserted, b[1] + deleted)
        if mixed_lo < lo or mixed_hi > hi:
            lo, hi = min(lo, mixed_lo), max(hi, mixed_hi)
            how += f"; widened for {inserted} inserts and {deleted} deletes in between"
    return RowBounds(lo, hi, how)


def _common_schema(before: TableBaseline, after: TableBaseline,
                   ) -> tuple[tuple[str, ...], tuple[str, ...], list[str]]:
    """Key and NOT NULL columns that held at both baselines (a DDL may sit in between)."""
    notes = []
    key = before.primary_key
    if before.primary_key != after.primary_key:
        key = ()
        notes.append("its primary key changed between the baselines: not checked")
    after_not_null = set(after.not_null)
    not_null = tuple(c for c in before.not_null if c in after_not_null)
    return key, not_null, notes


def _freshness(name: str, before: TableBaseline, after: TableBaseline, rows: RowBounds | None,
               target: datetime, settings: BoundSettings, before_label: str,
               ) -> tuple[FreshBounds | None, str | None]:
    column = settings.freshness.get(name)
    if column is None:
        return None, None
    high = target + settings.future_slack
    if rows is not None and rows.max_value == 0:
        return None, f"freshness of {column}: empty at both baselines, nothing to check"
    if column not in before.newest:
        low = target - settings.max_lag
        return FreshBounds(column, low, high,
                           f"no newest {column} recorded at {before_label}; within max_lag "
                           f"({settings.max_lag}) of the target"), None
    newest = before.newest[column]
    if newest is None:
        return None, f"freshness of {column}: no value at {before_label}, nothing to hold it to"
    if _rewritten(before, after):
        return None, (f"freshness of {column}: truncated or rewritten after {before_label}, "
                      "so its newest value may be older")
    if newest > high:
        return None, (f"freshness of {column}: its newest value at {before_label} "
                      f"({short_time(newest)}) is after the target; the source's clock or data "
                      "runs ahead, nothing to check")
    how = f"newest {column} at {before_label} ({short_time(newest)}) .. the target"
    return FreshBounds(column, newest, high, how), None


def plan_between(before: Baseline, after: Baseline, target: datetime,
                 settings: BoundSettings, later: Baseline | None = None) -> DrillReference:
    """Bounds for every table from the baselines just before and just after `target`.

    `later`, a reference read after `after`, lends its row counters.
    """
    b_label, a_label = before.label(), after.label()
    old, new = before.by_name(), after.by_name()
    beyond = later.by_name() if later is not None else {}
    plans: list[TablePlan] = []
    used = f"{b_label} .. {a_label}"
    for name in [*old, *(n for n in new if n not in old)]:
        b, a = old.get(name), new.get(name)
        schema, table = (b or a).schema, (b or a).table  # type: ignore[union-attr]
        if a is None:
            plans.append(TablePlan(schema, table, used, skipped=(
                f"dropped after {b_label}, before {a_label}: it may or may not exist at "
                "the target, so it is not checked")))
            continue
        if b is None:
            plans.append(TablePlan(schema, table, used, skipped=(
                f"created after {b_label}, by {a_label}: it may or may not exist at the "
                "target, so it is not checked")))
            continue
        key, not_null, notes = _common_schema(b, a)
        rows = row_bounds(b, a, settings.tolerance, b_label, a_label, beyond.get(name))
        if rows is None:
            notes.append(f"no row count or estimate recorded at {b_label} or {a_label}: "
                         "row count not checked")
        fresh, note = _freshness(name, b, a, rows, target, settings, b_label)
        if note:
            notes.append(note)
        plans.append(TablePlan(schema, table, used, key, not_null, rows, fresh,
                               notes=tuple(notes)))
    statement = (
        f"judged against the source as recorded just before the target, at {b_label}, and "
        f"just after it, at {a_label}: each table's restored row count lies between its "
        "counts there, and each freshness column's newest value between its value at "
        f"{b_label} and the target")
    return DrillReference(target, "baselines", statement, tuple(plans), b_label, a_label)


def plan_fallback(reference: Baseline, target: datetime, settings: BoundSettings,
                  why: str) -> DrillReference:
    """The old rule against one reference: rows >= (1 - tolerance) of it, recent writes."""
    label = reference.label()
    plans = []
    for t in reference.tables:
        rows = None
        notes: list[str] = []
        held = _interval(t, 0.0)
        if held is None:
            notes.append(f"no row count or estimate at {label}: row count not checked")
        else:
            count = held[0]
            lo = max(0, math.floor(count * (1.0 - settings.tolerance) + 1e-9))
            rows = RowBounds(lo, None, f"at least {1 - settings.tolerance:.0%} of {held[2]} "
                                       f"at {label} (the old tolerance)")
        fresh = None
        column = settings.freshness.get(t.qualified_table)
        if column is not None and held is not None and held[1] > 0:
            fresh = FreshBounds(column, target - settings.max_lag, target + settings.future_slack,
                                f"within max_lag ({settings.max_lag}) of the target "
                                "(the old rule)")
        plans.append(TablePlan(t.schema, t.table, f"fallback: {label}", t.primary_key,
                               t.not_null, rows, fresh, notes=tuple(notes)))
    statement = (f"{why}; judged against {label} with the old tolerance instead: each table "
                 f"holds at least {1 - settings.tolerance:.0%} of its rows there, and each "
                 f"freshness column's newest value is within {settings.max_lag} of the target")
    return DrillReference(target, "fallback", statement, tuple(plans), None, label)


def plan_reference(target: datetime, candidates: Sequence[Baseline], live: Baseline,
                   settings: BoundSettings, *, oldest: str | None = None,
                   margin: timedelta = VISIBILITY_MARGIN) -> DrillReference:
    """The drill's reference for `target`: neighbouring baselines, or the stated fallback.

    `candidates` are baselines around the target (the repository reader loads
    the few nearest), `live` the source read at drill time (always after the
    target: it stands in for a missing later baseline), `oldest` the label of
    the oldest baseline stored, for the fallback's sentence.
    """
    if target.utcoffset() is None:
        raise ValueError("target must be timezone-aware")
    before, after = choose_neighbours(candidates, target, margin)
    if before is not None:
        after = after or live
        later = min((b for b in candidates if b.read_from > after.read_from),
                    key=lambda b: b.read_from, default=None)
        if later is None and after is not live:
            later = live
        return plan_between(before, after, target, settings, later)
    # Only a lower bound is drawn from here, and a reference missing a commit still
    # in flight only lowers it: the nearest later baseline serves, with no margin.
    after = choose_neighbours(candidates, target, timedelta(0))[1]
    if oldest is None:
        why = "no baseline is recorded for this instance yet"
    else:
        why = (f"no baseline was recorded at or before the target {short_time(target)} "
               f"(the oldest is {oldest})")
    return plan_fallback(after or live, target, settings, why)
