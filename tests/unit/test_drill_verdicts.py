"""Each table's verdict in words, from a drill's reference and GX's result rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pitrflow.drill.baseline import Baseline, TableBaseline
from pitrflow.drill.bounds import BoundSettings, plan_reference
from pitrflow.drill.record import DrillRecord
from pitrflow.drill.verdicts import table_verdicts
from pitrflow.quality.generate import suites_from_plan
from pitrflow.quality.run_gx import ResultRow
from pitrflow.render import drill_markdown

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _baseline(minutes: int, *tables: TableBaseline) -> Baseline:
    at = T0 + timedelta(minutes=minutes)
    return Baseline("main", "postgresql", "mark", "k", at, at + timedelta(seconds=2),
                    at + timedelta(seconds=2), tables)


def _table(name: str, rows: int, **extra: object) -> TableBaseline:
    return TableBaseline("public", name, exact=rows, primary_key=("id",), not_null=("id",),
                         column_types={"id": "bigint"}, **extra)  # type: ignore[arg-type]


def test_verdicts_name_the_reference_bounds_restored_value_and_result() -> None:
    before = _baseline(0, _table("t", 10), _table("old", 3))
    after = _baseline(15, _table("t", 30), _table("new", 1))
    reference = plan_reference(T0 + timedelta(minutes=5), [before, after], after,
                               BoundSettings(0.2))
    rows = []
    for suite in suites_from_plan(reference.tables):
        for spec in suite.expectations:
            failed = spec.type == "expect_table_row_count_to_be_between"
            details = spec.meta["pitrflow"]
            rows.append(ResultRow(suite.name, spec.type, spec.column, not failed,
                                  "4" if failed else "0 unexpected", **{
                                      k: str(details[k]) for k in ("table", "check",
                                                                   "baseline", "bounds")
                                      if k in details}))

    verdicts = table_verdicts(reference, rows)

    by_key = {(v["table"], v["check"]): v for v in verdicts}
    count = by_key[("public.t", "row_count")]
    assert count == {
        "table": "public.t", "check": "row_count",
        "reference": "mark 2026-03-01T12:00:00Z .. mark 2026-03-01T12:15:00Z",
        "bounds": "10..30", "restored": "4", "result": "FAIL",
        "why": "10 counted at mark 2026-03-01T12:00:00Z, 30 counted at mark "
               "2026-03-01T12:15:00Z"}
    assert by_key[("public.t", "keys and NOT NULL")]["result"] == "pass"
    assert by_key[("public.old", "all")]["result"] == "skipped"
    assert by_key[("public.new", "all")]["why"].startswith("created after mark")

    record = DrillRecord(instance="main", started=T0, reference=reference.statement,
                         tables=verdicts)
    markdown = drill_markdown(record)
    assert "### Verdict by table" in markdown
    assert ("| public.t | row_count | mark 2026-03-01T12:00:00Z .. mark 2026-03-01T12:15:00Z "
            "| 10..30 | 4 | FAIL |") in markdown
    assert f"Reference: {reference.statement}." in markdown
