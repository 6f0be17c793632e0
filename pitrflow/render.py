"""Shapes every engine renders the same way: sizes, times, artifact keys, drill records.

Each engine renders its own plans, catalogs and outcomes (engines/<engine>/render)
with these, so the CLI, the flows' artifacts and the tests never disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts is not None else None


def drill_markdown(record: Any, kept_at: str | None = None) -> str:
    verdict = "PASSED" if record.passed else "FAILED"
    rows = [
        ("verdict", f"**{verdict}**"),
        ("target", f"{record.target_mode} {iso(record.target_time) or '(newest mark)'}"),
        ("recoverable window", f"{iso(record.window_from)} .. {iso(record.window_to)}"),
        ("chain", " -> ".join(record.chain) or "-"),
        ("WAL segments replayed", str(record.wal_segments)),
        ("RTO", f"{record.rto_seconds:.1f} s" if record.rto_seconds is not None else "-"),
        ("data lag (source now - recoverable point)",
         f"{record.data_lag_seconds:.0f} s" if record.data_lag_seconds is not None else "-"),
        ("expectations checked", str(record.quality_checked)),
        ("evidence", record.evidence or "-"),
    ]
    if kept_at:
        rows.append(("scratch instance kept at", kept_at))
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    phases = "\n".join(f"| {k} | {v:.2f} s |" for k, v in record.phases.items())
    text = (f"## Recovery drill {record.instance}: {verdict}\n\n| | |\n|---|---|\n{body}\n\n"
            f"### Time by phase\n\n| phase | time |\n|---|---|\n{phases}\n")
    if record.error:
        text += f"\n### Error\n\n```\n{record.error}\n```\n"
    if record.integrity_findings:
        text += "\n### Integrity findings\n\n" + "\n".join(
            f"- {f}" for f in record.integrity_findings) + "\n"
    if record.quality_failures:
        text += "\n### Failed expectations\n\n" + "\n".join(
            f"- {f}" for f in record.quality_failures) + "\n"
    text += verdicts_markdown(getattr(record, "reference", ""), getattr(record, "tables", []))
    return text


def verdicts_markdown(reference: str, tables: list[dict[str, str]]) -> str:
    """The drill's reference sentence and one row per table and check."""
    if not reference and not tables:
        return ""
    text = "\n### Verdict by table\n\n"
    if reference:
        text += f"Reference: {reference}.\n\n"
    if tables:
        text += ("| table | check | reference | bounds | restored | result | why |\n"
                 "|---|---|---|---|---|---|---|\n")
        text += "\n".join(
            "| " + " | ".join(_cell(row.get(k, "")) for k in
                              ("table", "check", "reference", "bounds", "restored", "result",
                               "why")) + " |"
            for row in tables) + "\n"
    return text


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ") or "-"
def markdown_table(title: str, rows: list[tuple[str, str]]) -> str:
    """A titled two-column markdown table: long values wrap in the Prefect UI, where a
    preformatted block would be cut off at the right edge."""
    def cell(value: str) -> str:
        return value.replace("|", "\\|").replace("\n", "<br>")

    body = "\n".join(f"| {cell(k)} | {cell(v)} |" for k, v in rows)
    return f"## {title}\n\n| | |\n|---|---|\n{body}\n"


def drill_checks_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The drill-checks-<instance> table (one row per GX expectation), for every engine."""
    return [{"suite": r["suite"], "expectation": r["expectation_type"],
             "column": r["column"] or "", "result": "pass" if r["success"] else "FAIL",
             "observed": r["observed"], "expected": r.get("bounds", ""),
             "reference": r.get("baseline", "")}
            for r in rows]


def artifact_key(kind: str, instance: str) -> str:
    """The key a Prefect artifact is published under (Prefect allows a-z, 0-9 and -)."""
    return f"{kind}-{instance}".lower().replace("_", "-").replace(".", "-")


def drill_history_text(records: list[Any]) -> str:
    if not records:
        return "drills: none yet"
    lines = ["drills (oldest first):", "  started                           result  target"
             "                              RTO      lag"]
    longest = max((r.rto_seconds or 0) for r in records) or 1
    for r in records:
        bar = "#" * max(1, round(20 * (r.rto_seconds or 0) / longest)) if r.rto_seconds else ""
        lines.append(
            f"  {iso(r.started)}  {'pass' if r.passed else 'FAIL':<6}  "
            f"{(iso(r.target_time) or r.target_mode):<34}  "
            f"{(f'{r.rto_seconds:.1f}s' if r.rto_seconds is not None else '-'):>7}  "
            f"{(f'{r.data_lag_seconds:.0f}s' if r.data_lag_seconds is not None else '-'):>6}  "
            f"{bar}")
    return "\n".join(lines)


def locked_lines(locked: list[tuple[str, datetime | None]]) -> list[str]:
    """What an expire could not delete yet because of S3 Object Lock, and when it can."""
    return [f"  LOCKED {what}: Object Lock until {iso(until) or '?'}; the first expire after "
            "that deletes it" for what, until in locked]


def locked_rows(locked: list[tuple[str, datetime | None]]) -> list[dict[str, str | None]]:
    """The same, as task results and JSON carry it."""
    return [{"what": what, "locked_until": iso(until)} for what, until in locked]
