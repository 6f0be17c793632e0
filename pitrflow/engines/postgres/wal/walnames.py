"""Pure arithmetic on LSNs, WAL segment names and timeline history files.

Kept free of I/O so the planner and its unit tests can reason about WAL
ranges without a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pitrflow.errors import UsageError

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    match = _LSN_RE.match(text.strip())
    if not match:
        raise UsageError(f"{text!r} is not an LSN", "write it like 0/16B3748")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segments_per_xlogid(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segno_of(lsn: int, segment_size: int) -> int:
    return lsn // segment_size


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    per = segments_per_xlogid(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment_name(name: str, segment_size: int) -> tuple[int, int]:
    """(timeline, segment number) of a WAL segment file name."""
    match = _SEGMENT_RE.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a WAL segment name")
    tli, log_id, seg = (int(g, 16) for g in match.groups())
    return tli, log_id * segments_per_xlogid(segment_size) + seg


def is_segment_name(name: str) -> bool:
    return bool(_SEGMENT_RE.match(name))


def is_history_name(name: str) -> bool:
    return bool(_HISTORY_RE.match(name))


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


def segment_start_lsn(segno: int, segment_size: int) -> int:
    return segno * segment_size


@dataclass(frozen=True)
class TimelineSwitch:
    """One line of a history file: `parent` ended at `switch_lsn`."""

    parent: int
    switch_lsn: int


def parse_history(text: str) -> list[TimelineSwitch]:
    switches = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        switches.append(TimelineSwitch(int(parts[0]), parse_lsn(parts[1])))
    return switches
