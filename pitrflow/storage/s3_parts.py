"""Multipart part sizes for S3: under the 10,000-part limit with bounded memory.

S3 caps one multipart upload at 10,000 parts of 5 MiB to 5 GiB each (only the
last part may be smaller) and one object at 5 TiB.  A part must be held
(in memory or in a small spill file) until it is uploaded, so parts should be
as small as the limit allows.  A stream of unknown length (pg_basebackup's tar)
starts at 8 MiB and doubles the part size every 1,000 parts, so 10,000 parts
hold about 8 TiB while a small database never buffers more than 8 MiB a part.
When the size is known up front the smallest sufficient size is chosen once,
and it still grows on that schedule if the object turns out larger.
"""

from __future__ import annotations

MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * GIB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * TIB
START_PART_SIZE = 8 * MIB
PARTS_PER_STEP = 1_000
# Objects smaller than this at commit go up in one PutObject, never a multipart upload.
SINGLE_PUT_LIMIT = START_PART_SIZE


def part_size_for(expected_size: int) -> int:
    """The smallest part size (8 MiB doubled k times) that fits `expected_size` in 10,000 parts."""
    if expected_size < 0:
        raise ValueError(f"expected size {expected_size} is negative")
    if expected_size > MAX_OBJECT_SIZE:
        raise ValueError(f"expected size {expected_size} exceeds S3's 5 TiB object limit")
    size = START_PART_SIZE
    while size * MAX_PARTS < expected_size:
        size *= 2
    return min(size, MAX_PART_SIZE)


def growing_part_size(part_number: int) -> int:
    """Part size for part `part_number` (from 1) of a stream of unknown length."""
    if part_number < 1:
        raise ValueError(f"part numbers start at 1, got {part_number}")
    step = (part_number - 1) // PARTS_PER_STEP
    return min(START_PART_SIZE << min(step, 30), MAX_PART_SIZE)


class PartSizer:
    """Part sizes for one upload: fixed from a declared size, growing past it."""

    def __init__(self, expected_size: int | None = None) -> None:
        if expected_size is None:
            self.base, self.planned_parts = START_PART_SIZE, 0
        else:
            self.base = part_size_for(expected_size)
            self.planned_parts = -(-expected_size // self.base)

    def size_of(self, part_number: int) -> int:
        if part_number <= self.planned_parts:
            return self.base
        return max(self.base, growing_part_size(part_number))

    def capacity(self, parts: int = MAX_PARTS) -> int:
        """Bytes that `parts` parts hold on this schedule."""
        return sum(self.size_of(n) for n in range(1, parts + 1))

    def parts_for(self, total: int) -> int:
        """How many parts an object of `total` bytes takes (at least one)."""
        parts, held = 0, 0
        while held < total or parts == 0:
            parts += 1
            held += self.size_of(parts)
        return parts
