"""Parsing the times users give: ISO 8601, always with an offset.

A naive time means a different moment on every host, so it is refused
rather than guessed.
"""

from __future__ import annotations

from datetime import datetime

from pitrflow.errors import UsageError


def parse_aware(text: str, label: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{label} {text!r} is not an ISO 8601 time",
                         "write it like 2026-11-26T09:45:00+00:00, or use latest") from None
    if value.utcoffset() is None:
        raise UsageError(f"{label} {text} has no timezone offset",
                         "add one, e.g. 2026-11-26T09:45:00+00:00")
    return value
