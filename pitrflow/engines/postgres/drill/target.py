"""Which point a drill restores to: a given time, the newest mark, or a random point.

A random point is drawn uniformly from the recoverable window, so over many
nights every backup, incremental and stretch of WAL gets exercised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from pitrflow.engines.postgres.catalog.snapshot import Catalog
from pitrflow.engines.postgres.restore.planner import recoverable_window
from pitrflow.errors import RestoreRefusedError
from pitrflow.times import parse_aware


@dataclass(frozen=True)
class DrillTarget:
    mode: str  # "time" | "latest" | "random"
    time: datetime | None
    window_from: datetime | None
    window_to: datetime | None


def choose_target(catalog: Catalog, spec: str, rng: random.Random | None = None) -> DrillTarget:
    window = recoverable_window(catalog)
    if spec == "latest":
        return DrillTarget("latest", None, window.start, window.end)
    if spec == "random":
        if window.start is None or window.end is None:
            raise RestoreRefusedError(
                f"instance {catalog.instance} has no recoverable window yet",
                "take a backup and ship WAL first (pitr backup full, then pitr ship)")
        span = (window.end - window.start).total_seconds()
        offset = (rng or random.SystemRandom()).uniform(0, span)
        return DrillTarget("random", window.start + (window.end - window.start) * (offset / span)
                           if span > 0 else window.start, window.start, window.end)
    return DrillTarget("time", parse_aware(spec, "drill target"), window.start, window.end)
