"""Finding the baselines around a drill's target in the repository.

Each engine lists where its baselines are (PostgreSQL: beside the marks and
backups; SQL Server: inside each backup's prefix) with the time of what each
was read after; this loads the few around the target, so a drill reads a
handful of small objects however long the history is.  A damaged baseline
is skipped with a note: the next one out serves instead.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pitrflow.drill.baseline import Baseline, load_baseline
from pitrflow.drill.bounds import VISIBILITY_MARGIN
from pitrflow.errors import PitrError
from pitrflow.storage.base import Repository


@dataclass(frozen=True)
class StoredBaseline:
    """Where a baseline is, and the time of the mark or backup it was read after."""

    key: str
    time: datetime


@dataclass
class Neighbourhood:
    """The baselines loaded around a target, and what could not be read."""

    candidates: list[Baseline] = field(default_factory=list)
    oldest: str | None = None
    problems: list[str] = field(default_factory=list)


def load_neighbourhood(repo: Repository, stored: Sequence[StoredBaseline], target: datetime,
                       margin: timedelta = VISIBILITY_MARGIN) -> Neighbourhood:
    """Load outward from the target: one baseline before it, two after it.

    A baseline is read a little after the time it is named by, so the walk
    back starts at the newest one named at or before the target, and goes on
    while the ones it loads were read after the target.
    """
    ordered = sorted(stored, key=lambda s: s.time)
    found = Neighbourhood()
    split = bisect.bisect_right([s.time for s in ordered], target)
    for item in reversed(ordered[:split]):
        baseline = _load(repo, item, found)
        if baseline is not None and baseline.read_to <= target:
            break
    # One past the first baseline after the target: its row counters serve the bounds.
    beyond = 0
    for item in ordered[split:]:
        baseline = _load(repo, item, found)
        if baseline is not None and baseline.read_from >= target + margin:
            beyond += 1
            if beyond == 2:
                break
    if ordered:
        oldest = next((b for b in found.candidates if b.key == ordered[0].key), None)
        oldest = oldest or _load(repo, ordered[0], found)
        found.oldest = oldest.label() if oldest is not None else ordered[0].key
    return found


def _load(repo: Repository, item: StoredBaseline, found: Neighbourhood) -> Baseline | None:
    try:
        baseline = load_baseline(repo.get_bytes(item.key), item.key)
    except PitrError as exc:
        found.problems.append(f"baseline {item.key} skipped: {exc.message}")
        return None
    found.candidates.append(baseline)
    return baseline
