"""The drill's bounds from neighbouring baselines: pure code, exact numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pitrflow.drill.baseline import Baseline, TableBaseline, dump_baseline, load_baseline
from pitrflow.drill.bounds import (
    BoundSettings,
    choose_neighbours,
    plan_reference,
    row_bounds,
)
from pitrflow.errors import RepositoryError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOL = 0.2


def _table(name: str, exact: int | None = None, estimates: tuple[int, ...] = (),
           changes: tuple[int, int] | None = None, rewrites: str | None = "1",
           newest: dict[str, datetime | None] | None = None) -> TableBaseline:
    return TableBaseline("public", name, estimates=estimates, exact=exact, changes=changes,
                         rewrites=rewrites, primary_key=("id",), not_null=("id", "at"),
                         column_types={"id": "bigint", "at": "timestamp with time zone"},
                         newest=newest or {})


def _baseline(minutes: float, *tables: TableBaseline, origin: str = "mark") -> Baseline:
    at = T0 + timedelta(minutes=minutes)
    return Baseline("main", "postgresql", origin, f"main/marks/{minutes}", at,
                    at + timedelta(seconds=2), at + timedelta(seconds=2, milliseconds=5),
                    tuple(tables))


def _plans(reference):  # type: ignore[no-untyped-def]
    return {p.qualified_table: p for p in reference.tables}


def test_exact_counts_that_agree_give_an_exact_bound() -> None:
    bounds = row_bounds(_table("t", 120, changes=(120, 0)), _table("t", 120, changes=(120, 0)),
                        TOL, "mark A", "mark B")
    assert bounds is not None
    assert (bounds.min_value, bounds.max_value) == (120, 120)
    assert bounds.text() == "= 120"
    assert bounds.how == "exactly 120 at both mark A and mark B"


def test_a_growing_table_is_bounded_by_both_counts() -> None:
    bounds = row_bounds(_table("t", 100, changes=(100, 0)), _table("t", 300, changes=(300, 0)),
                        TOL)
    assert bounds is not None and (bounds.min_value, bounds.max_value) == (100, 300)


def test_a_shrinking_table_is_bounded_by_both_counts() -> None:
    bounds = row_bounds(_table("t", 300, changes=(300, 0)), _table("t", 90, changes=(300, 210)),
                        TOL)
    assert bounds is not None and (bounds.min_value, bounds.max_value) == (90, 300)


def test_inserts_and_deletes_in_between_widen_an_equal_count() -> None:
    # A queue: 5 rows at both baselines, 40 inserted and 40 deleted in between.
    bounds = row_bounds(_table("q", 5, changes=(100, 95)), _table("q", 5, changes=(140, 135)),
                        TOL)
    assert bounds is not None
    assert (bounds.min_value, bounds.max_value) == (0, 45)
    assert "40 inserts and 40 deletes" in bounds.how


def test_a_truncate_in_between_allows_zero() -> None:
    bounds = row_bounds(_table("t", 50, changes=(50, 0), rewrites="16401"),
                        _table("t", 20, changes=(70, 0), rewrites="16999"), TOL)
    assert bounds is not None
    assert (bounds.min_value, bounds.max_value) == (0, 70)
    assert "truncated or rewritten" in bounds.how


def test_reset_counters_teach_nothing_so_only_the_counts_bound() -> None:
    bounds = row_bounds(_table("t", 50, changes=(500, 450)), _table("t", 50, changes=(3, 3)),
                        TOL)
    assert bounds is not None and (bounds.min_value, bounds.max_value) == (50, 50)


def test_estimates_are_widened_by_the_tolerance_and_exact_sides_are_not() -> None:
    # Before: two estimates that disagree (n_live_tup, reltuples); after: counted.
    bounds = row_bounds(_table("t", estimates=(1000, 900)), _table("t", 1500), TOL)
    assert bounds is not None
    assert (bounds.min_value, bounds.max_value) == (720, 1500)  # 900 * 0.8, the exact 1500
    assert "estimate" in bounds.how


def test_no_estimate_at_all_gives_no_bound() -> None:
    assert row_bounds(_table("t", estimates=(-1,)), _table("t", 10), TOL) is None


def test_neighbours_are_read_wholly_before_and_after_the_target() -> None:
    early, mid, late = _baseline(0), _baseline(15), _baseline(30)
    target = T0 + timedelta(minutes=15, seconds=1)  # after mark 15, before its baseline read
    before, after = choose_neighbours([late, early, mid], target)
    assert (before, after) == (early, mid)
    # Within the visibility margin after the target a baseline is not trusted as "after".
    before, after = choose_neighbours([early, mid, late], mid.read_from - timedelta(
        milliseconds=500))
    assert (before, after) == (early, late)


def test_plan_between_two_marks_names_both_and_bounds_every_table() -> None:
    fresh_at = T0 + timedelta(minutes=14)
    before = _baseline(0, _table("grows", 100, changes=(100, 0),
                                 newest={"at": fresh_at}),
                       _table("gone", 7, changes=(7, 0)))
    after = _baseline(30, _table("grows", 300, changes=(300, 0), newest={"at": T0}),
                      _table("late", 40, changes=(40, 0)))
    target = T0 + timedelta(minutes=20)
    settings = BoundSettings(TOL, {"public.grows": "at"})
    reference = plan_reference(target, [before, after], _baseline(60), settings)

    assert reference.mode == "baselines"
    assert reference.before == "mark 2026-03-01T12:00:00Z"
    assert reference.after == "mark 2026-03-01T12:30:00Z"
    assert "mark 2026-03-01T12:00:00Z" in reference.statement
    plans = _plans(reference)
    grows = plans["public.grows"]
    assert grows.baseline == "mark 2026-03-01T12:00:00Z .. mark 2026-03-01T12:30:00Z"
    assert grows.rows is not None and (grows.rows.min_value, grows.rows.max_value) == (100, 300)
    assert grows.freshness is not None
    assert grows.freshness.min_value == fresh_at
    assert grows.freshness.max_value == target + settings.future_slack
    assert grows.primary_key == ("id",) and grows.not_null == ("id", "at")
    assert plans["public.gone"].skipped is not None
    assert "dropped after mark 2026-03-01T12:00:00Z" in plans["public.gone"].skipped
    assert plans["public.late"].skipped is not None
    assert "created after mark 2026-03-01T12:00:00Z" in plans["public.late"].skipped


def test_without_a_later_baseline_the_live_source_stands_in() -> None:
    before = _baseline(0, _table("t", 10, changes=(10, 0)))
    live = _baseline(90, _table("t", 25, changes=(25, 0)), origin="live")
    reference = plan_reference(T0 + timedelta(minutes=5), [before], live, BoundSettings(TOL))
    [plan] = reference.tables
    assert plan.rows is not None and (plan.rows.min_value, plan.rows.max_value) == (10, 25)
    assert reference.after == "the source as read at drill time (2026-03-01T13:30:00Z)"


def test_a_target_before_the_first_baseline_falls_back_in_words() -> None:
    first = _baseline(10, _table("t", 100, changes=(100, 0)))
    live = _baseline(90, _table("t", 400, changes=(400, 0)), origin="live")
    target = T0 + timedelta(minutes=5)
    settings = BoundSettings(TOL, {"public.t": "at"}, max_lag=timedelta(minutes=30))
    reference = plan_reference(target, [first], live, settings, oldest=first.label())

    assert reference.mode == "fallback"
    assert reference.statement.startswith(
        "no baseline was recorded at or before the target 2026-03-01T12:05:00Z (the oldest "
        "is mark 2026-03-01T12:10:00Z); judged against mark 2026-03-01T12:10:00Z with the "
        "old tolerance")
    [plan] = reference.tables
    # The old rule, against the nearest later reference: at least 80% of 100, no upper bound.
    assert plan.rows is not None and (plan.rows.min_value, plan.rows.max_value) == (80, None)
    assert plan.freshness is not None
    assert plan.freshness.min_value == target - timedelta(minutes=30)


def test_no_baseline_at_all_falls_back_to_the_live_source() -> None:
    live = _baseline(90, _table("t", 400), origin="live")
    reference = plan_reference(T0, [], live, BoundSettings(TOL))
    assert reference.mode == "fallback"
    assert reference.statement.startswith("no baseline is recorded for this instance yet; "
                                          "judged against the source as read at drill time")
    assert reference.tables[0].rows is not None
    assert reference.tables[0].rows.min_value == 320


def test_freshness_without_a_recorded_value_or_after_a_truncate_says_why() -> None:
    target = T0 + timedelta(minutes=20)
    settings = BoundSettings(TOL, {"public.e": "at", "public.n": "at", "public.r": "at"})
    before = _baseline(0, _table("e", 0, newest={"at": None}), _table("n", 5),
                       _table("r", 5, newest={"at": T0}, rewrites="1"))
    after = _baseline(30, _table("e", 0, newest={"at": None}), _table("n", 9),
                      _table("r", 2, newest={"at": T0}, rewrites="2"))
    plans = _plans(plan_reference(target, [before, after], after, settings))
    assert plans["public.e"].freshness is None
    assert any("empty at both baselines" in n for n in plans["public.e"].notes)
    # Not recorded (no index, table too large): the old max_lag window instead.
    fresh = plans["public.n"].freshness
    assert fresh is not None and fresh.min_value == target - settings.max_lag
    assert "no newest at recorded" in fresh.how
    assert plans["public.r"].freshness is None
    assert any("truncated or rewritten" in n for n in plans["public.r"].notes)


def test_a_changed_primary_key_is_not_checked() -> None:
    before = _baseline(0, _table("t", 3))
    changed = TableBaseline("public", "t", exact=3, primary_key=("id", "at"),
                            not_null=("id",), column_types={"id": "bigint"})
    plans = _plans(plan_reference(T0 + timedelta(minutes=1), [before, _baseline(30, changed)],
                                  before, BoundSettings(TOL)))
    assert plans["public.t"].primary_key == ()
    assert plans["public.t"].not_null == ("id",)


def test_a_naive_target_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_reference(datetime(2026, 1, 1), [], _baseline(0), BoundSettings(TOL))


def test_a_baseline_record_round_trips_and_rejects_damage() -> None:
    table = _table("t", 5, estimates=(5, 4), changes=(9, 4), newest={"at": T0})
    baseline = _baseline(0, table)
    data = dump_baseline(baseline)
    loaded = load_baseline(data, "k")
    assert loaded.tables == (table,)
    assert (loaded.read_from, loaded.read_to, loaded.origin) == (
        baseline.read_from, baseline.read_to, "mark")
    with pytest.raises(RepositoryError, match="k is not a valid pitrflow baseline"):
        load_baseline(data[:-7], "k")
    with pytest.raises(RepositoryError, match="k is not a zstd-compressed baseline"):
        load_baseline(b"{}" + data, "k")


def test_thousands_of_tables_stay_small() -> None:
    tables = [TableBaseline(f"schema_{i % 20}", f"customer_orders_{i}", estimates=(i * 37, i * 36),
                            exact=i * 37 if i % 3 else None, changes=(i * 50, i * 13),
                            rewrites=str(16384 + i), primary_key=("id",),
                            not_null=("id", "customer_id", "created_at"),
                            column_types={"id": "bigint", "customer_id": "bigint",
                                          "created_at": "timestamp with time zone",
                                          "status": "text", "amount": "numeric(12,2)",
                                          "note": "character varying(200)"})
              for i in range(3000)]
    data = dump_baseline(_baseline(0, *tables))
    assert len(data) < 150_000, len(data)
    assert len(load_baseline(data, "k").tables) == 3000


def test_row_counters_read_later_catch_activity_the_statistics_had_not_yet_counted() -> None:
    # 32 deletes then 1 insert between the baselines; at the later one the statistics
    # had counted 24 of the deletes and not the insert yet (they flush about a second
    # late).  The count at a moment after the deletes and before the insert was 268.
    before = _table("s", 300, changes=(300, 0))
    after = _table("s", 269, changes=(300, 24))
    lagging = row_bounds(before, after, TOL)
    assert lagging is not None and lagging.min_value == 269  # would fail a healthy 268
    later = _table("s", 250, changes=(305, 50))
    bounds = row_bounds(before, after, TOL, later=later)
    assert bounds is not None and bounds.min_value <= 268 and bounds.max_value is not None
    assert bounds.max_value >= 300


def test_plan_between_takes_the_counters_of_the_reference_after_the_later_baseline() -> None:
    before = _baseline(0, _table("s", 300, changes=(300, 0)))
    after = _baseline(15, _table("s", 269, changes=(300, 24)))
    later = _baseline(30, _table("s", 240, changes=(302, 62)))
    reference = plan_reference(T0 + timedelta(minutes=7), [later, after, before], later,
                               BoundSettings(TOL))
    [plan] = reference.tables
    assert plan.rows is not None and plan.rows.min_value <= 268
    assert "inserts and" in plan.rows.how


def test_the_fallback_takes_the_very_next_baseline_without_a_margin() -> None:
    first = _baseline(10, _table("t", 100))
    second = _baseline(20, _table("t", 400))
    target = first.read_from - timedelta(milliseconds=100)  # within the visibility margin
    reference = plan_reference(target, [first, second], second, BoundSettings(TOL),
                               oldest=first.label())
    assert reference.mode == "fallback" and reference.after == first.label()
    assert reference.tables[0].rows is not None and reference.tables[0].rows.min_value == 80
