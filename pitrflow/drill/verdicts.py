"""Each table's verdict in words: the reference used, the bounds, the restored value.

Joins a drill's reference (`drill.bounds`) with GX's verdicts on the
generated expectations, so the artifact and the stored drill record say per
table what was expected, from which baseline, what the restore held, and
whether that passed; tables left unchecked are listed with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pitrflow.drill.bounds import DrillReference

_KEY_CHECKS = ("primary_key", "not_null")


def table_verdicts(reference: DrillReference, rows: Sequence[Any]) -> list[dict[str, str]]:
    """One dict per table and check: table, check, reference, bounds, restored, result.

    `rows` are GX result rows (`quality.run_gx.ResultRow`); those of
    generated expectations carry their table, check, baseline and bounds.
    Key and NOT NULL checks of a table fold into one line.
    """
    by_table: dict[str, list[Any]] = {}
    for row in rows:
        if getattr(row, "table", ""):
            by_table.setdefault(row.table, []).append(row)
    verdicts: list[dict[str, str]] = []
    for plan in reference.tables:
        name = plan.qualified_table
        if plan.skipped is not None:
            verdicts.append(_line(name, "all", plan.baseline, "-", "-", "skipped", plan.skipped))
            continue
        found = by_table.get(name, [])
        hows = {"row_count": plan.rows.how if plan.rows else "",
                "freshness": plan.freshness.how if plan.freshness else ""}
        for check in ("row_count", "freshness"):
            for row in (r for r in found if r.check == check):
                verdicts.append(_line(name, check, row.baseline or plan.baseline, row.bounds,
                                      row.observed, "pass" if row.success else "FAIL",
                                      hows[check]))
        keys = [r for r in found if r.check in _KEY_CHECKS]
        if keys:
            failed = [r for r in keys if not r.success]
            columns = ", ".join(sorted({str(r.column) for r in keys if r.column}))
            verdicts.append(_line(
                name, "keys and NOT NULL", plan.baseline, f"unique/not null: {columns}",
                "; ".join(f"{r.column}: {r.observed}" for r in failed) or "as expected",
                "FAIL" if failed else "pass"))
        for note in plan.notes:
            verdicts.append(_line(name, "not checked", plan.baseline, "-", "-", "skipped", note))
    return verdicts


def _line(table: str, check: str, baseline: str, bounds: str, restored: str, result: str,
          why: str = "") -> dict[str, str]:
    return {"table": table, "check": check, "reference": baseline, "bounds": bounds,
            "restored": restored, "result": result, "why": why}
