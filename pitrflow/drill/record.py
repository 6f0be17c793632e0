"""Drill records: what each drill restored, how long each phase took, what it found.

Stored in the repository beside the backups they prove, so the history
survives the worker; `pitr info` reads them back for the RTO trend.  PostgreSQL
and SQL Server drills store the same shape under the same key
(`<instance>/drills/<started>.json`), told apart by `engine`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pitrflow.catalog.records import dump_record, load_record
from pitrflow.errors import RepositoryError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import drill_key


@dataclass
class DrillRecord:
    instance: str
    started: datetime
    finished: datetime | None = None
    target_mode: str = ""
    target_time: datetime | None = None
    window_from: datetime | None = None
    window_to: datetime | None = None
    chain: list[str] = field(default_factory=list)
    wal_segments: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    rto_seconds: float | None = None
    data_lag_seconds: float | None = None
    integrity_findings: list[str] = field(default_factory=list)
    quality_failures: list[str] = field(default_factory=list)
    quality_checked: int = 0
    error: str | None = None
    kept_at: str | None = None
    evidence: str | None = None
    # Records written before SQL Server drills existed have no engine: PostgreSQL.
    engine: str = "postgresql"
    # What the generated checks were judged against, in words (which baselines,
    # or the fallback and why), and one row per table and check: reference,
    # bounds, restored value, result (pitrflow.drill.verdicts).
    reference: str = ""
    tables: list[dict[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.error is None and not self.integrity_findings
                and not self.quality_failures and self.quality_checked > 0)

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        for key in ("started", "finished", "target_time", "window_from", "window_to"):
            value = body[key]
            body[key] = value.isoformat() if value is not None else None
        body["passed"] = self.passed
        return body


def _from_dict(doc: dict[str, Any]) -> DrillRecord:
    doc = {k: v for k, v in doc.items() if k not in ("format", "kind", "passed")}
    for key in ("started", "finished", "target_time", "window_from", "window_to"):
        if doc.get(key):
            doc[key] = datetime.fromisoformat(doc[key])
    return DrillRecord(**doc)


def store_record(repo: Repository, record: DrillRecord) -> str:
    key = drill_key(record.instance, record.started)
    repo.put_bytes(key, dump_record("drill", record.to_dict()))
    return key


def evidence_prefix(record: DrillRecord) -> str:
    return drill_key(record.instance, record.started).removesuffix(".json") + "/"


def store_evidence(repo: Repository, record: DrillRecord, directory: Path) -> str:
    """Copy the drill's evidence files (GX data docs, results) next to its record."""
    prefix = evidence_prefix(record)
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            repo.put_file(prefix + path.relative_to(directory).as_posix(), path)
    return prefix


def drill_history(repo: Repository, instance: str, limit: int = 10) -> list[DrillRecord]:
    records = []
    keys = [i.key for i in repo.list(f"{instance}/drills/") if i.key.endswith(".json")
            and i.key.count("/") == 2]
    for key in sorted(keys)[-limit:]:
        try:
            records.append(_from_dict(load_record("drill", repo.get_bytes(key), key)))
        except (RepositoryError, TypeError, ValueError):
            continue
    return records
