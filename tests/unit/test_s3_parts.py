"""Multipart part sizing: any object S3 accepts fits in 10,000 parts of allowed sizes."""

from __future__ import annotations

import pytest

from pitrflow.storage.s3_parts import (
    GIB,
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIB,
    MIN_PART_SIZE,
    START_PART_SIZE,
    TIB,
    PartSizer,
    growing_part_size,
    part_size_for,
)

FIVE_TB = 5 * 10**12


@pytest.mark.parametrize("declared", [FIVE_TB, MAX_OBJECT_SIZE])
def test_a_declared_five_terabytes_fits_under_the_part_limit(declared: int) -> None:
    size = part_size_for(declared)
    parts = -(-declared // size)
    assert parts <= MAX_PARTS
    assert MIN_PART_SIZE <= size <= MAX_PART_SIZE
    # The smallest doubling of 8 MiB that fits, so the parts held in memory stay small.
    assert (size // 2) * MAX_PARTS < declared
    assert size in (512 * MIB, 1 * GIB)
    sizer = PartSizer(declared)
    assert sizer.parts_for(declared) == parts
    assert all(sizer.size_of(n) <= MAX_PART_SIZE for n in (1, parts, MAX_PARTS))


@pytest.mark.parametrize("declared, expected", [
    (0, START_PART_SIZE),
    (1, START_PART_SIZE),
    (START_PART_SIZE * MAX_PARTS, START_PART_SIZE),
    (START_PART_SIZE * MAX_PARTS + 1, 2 * START_PART_SIZE),
    (100 * GIB, 16 * MIB),
    (TIB, 128 * MIB),
])
def test_small_declared_sizes_keep_small_parts(declared: int, expected: int) -> None:
    assert part_size_for(declared) == expected
    assert -(-declared // expected) <= MAX_PARTS


def test_sizes_beyond_what_s3_accepts_are_refused() -> None:
    with pytest.raises(ValueError, match="5 TiB"):
        part_size_for(MAX_OBJECT_SIZE + 1)
    with pytest.raises(ValueError, match="negative"):
        part_size_for(-1)


def test_a_stream_of_unknown_length_grows_its_parts_to_hold_five_terabytes() -> None:
    sizer = PartSizer()
    assert sizer.size_of(1) == START_PART_SIZE
    assert sizer.size_of(1000) == START_PART_SIZE  # a 8 GiB database never buffers more
    assert sizer.size_of(1001) == 2 * START_PART_SIZE
    assert sizer.capacity() >= MAX_OBJECT_SIZE
    parts = sizer.parts_for(FIVE_TB)
    assert parts < MAX_PARTS
    assert sizer.parts_for(MAX_OBJECT_SIZE) < MAX_PARTS
    sizes = [sizer.size_of(n) for n in range(1, MAX_PARTS + 1)]
    assert sizes == sorted(sizes), "part sizes never shrink"
    assert max(sizes) <= MAX_PART_SIZE
    assert min(sizes) >= MIN_PART_SIZE


def test_growth_is_capped_at_the_largest_part_s3_allows() -> None:
    assert growing_part_size(10**9) == MAX_PART_SIZE
    with pytest.raises(ValueError):
        growing_part_size(0)


def test_a_declared_size_that_turns_out_too_small_still_fits() -> None:
    sizer = PartSizer(expected_size=10 * MIB)  # declared small, the stream is 3 TiB
    assert sizer.size_of(1) == START_PART_SIZE
    assert sizer.parts_for(3 * TIB) <= MAX_PARTS


def test_a_declared_size_gets_uniform_parts_then_grows_past_it() -> None:
    sizer = PartSizer(expected_size=TIB)
    planned = sizer.parts_for(TIB)
    assert planned == TIB // (128 * MIB)
    assert {sizer.size_of(n) for n in range(1, planned + 1)} == {128 * MIB}
    assert sizer.size_of(planned + 1) > 128 * MIB  # the stream outgrew its declaration
    assert sizer.parts_for(MAX_OBJECT_SIZE) <= MAX_PARTS
