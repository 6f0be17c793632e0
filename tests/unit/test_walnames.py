"""LSN, WAL segment name and history file arithmetic."""

from __future__ import annotations

import pytest

from pitrflow.engines.postgres.wal.walnames import (
    DEFAULT_SEGMENT_SIZE,
    TimelineSwitch,
    format_lsn,
    history_name,
    is_history_name,
    is_segment_name,
    parse_history,
    parse_lsn,
    parse_segment_name,
    segment_name,
    segment_start_lsn,
    segments_per_xlogid,
    segno_of,
)
from pitrflow.errors import UsageError

MB16 = 16 * 1024 * 1024
MB64 = 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/16B3748", 0x16B3748),
        ("1A/FF000028", (0x1A << 32) | 0xFF000028),
        ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
        ("1/0", 1 << 32),
    ],
)
def test_parse_and_format_lsn_round_trip(text: str, value: int) -> None:
    assert parse_lsn(text) == value
    assert format_lsn(value) == text
    assert parse_lsn(format_lsn(value)) == value


def test_parse_lsn_accepts_lowercase_and_whitespace_and_formats_uppercase() -> None:
    assert parse_lsn(" 1a/ff000028\n") == (0x1A << 32) | 0xFF000028
    assert format_lsn(parse_lsn("1a/ff000028")) == "1A/FF000028"


def test_format_lsn_has_no_leading_zeros() -> None:
    assert format_lsn(0x0000000300000028) == "3/28"


@pytest.mark.parametrize(
    "text",
    ["", "0", "0/", "/16B3748", "0x0/16B3748", "G/0", "0/16B3748/1", "123456789/0",
     "0/123456789", "0 / 1", "-1/0", "0-16B3748"],
)
def test_invalid_lsn_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_lsn(text)
    assert caught.value.message == f"{text!r} is not an LSN"
    assert caught.value.hint == "write it like 0/16B3748"


def test_segments_per_xlogid() -> None:
    assert segments_per_xlogid(MB16) == 256
    assert segments_per_xlogid(MB64) == 64
    assert segments_per_xlogid(1024 * 1024 * 1024) == 4
    assert DEFAULT_SEGMENT_SIZE == MB16


@pytest.mark.parametrize(
    ("tli", "segno", "size", "name"),
    [
        (1, 0, MB16, "000000010000000000000000"),
        (1, 1, MB16, "000000010000000000000001"),
        (1, 255, MB16, "0000000100000000000000FF"),
        (1, 256, MB16, "000000010000000100000000"),
        (1, 257, MB16, "000000010000000100000001"),
        (0x2A, 0x1A * 256 + 0xFF, MB16, "0000002A0000001A000000FF"),
        (1, 63, MB64, "00000001000000000000003F"),
        (1, 64, MB64, "000000010000000100000000"),
        (3, 65, MB64, "000000030000000100000001"),
        (1, 255, MB64, "00000001000000030000003F"),
        (1, 256, MB64, "000000010000000400000000"),
    ],
)
def test_segment_name_and_back(tli: int, segno: int, size: int, name: str) -> None:
    assert segment_name(tli, segno, size) == name
    assert parse_segment_name(name, size) == (tli, segno)
    assert is_segment_name(name)


def test_xlogid_boundary_16mb() -> None:
    last_of_first = segment_name(1, 255, MB16)
    first_of_second = segment_name(1, 256, MB16)
    assert last_of_first == "0000000100000000000000FF"
    assert first_of_second == "000000010000000100000000"
    assert last_of_first < first_of_second, "segment names sort in WAL order"


def test_xlogid_boundary_64mb() -> None:
    assert segment_name(1, 63, MB64) == "00000001000000000000003F"
    assert segment_name(1, 64, MB64) == "000000010000000100000000"


def test_segment_name_of_an_lsn() -> None:
    lsn = parse_lsn("1A/FF000028")
    assert segno_of(lsn, MB16) == 0x1A * 256 + 0xFF
    assert segment_name(1, segno_of(lsn, MB16), MB16) == "000000010000001A000000FF"
    assert segment_name(1, segno_of(lsn, MB64), MB64) == "000000010000001A0000003F"
    assert segno_of(parse_lsn("1/0"), MB16) == 256
    assert segno_of(parse_lsn("0/FFFFFFF"), MB16) == 15
    assert segment_start_lsn(256, MB16) == parse_lsn("1/0")
    assert segment_start_lsn(65, MB64) == parse_lsn("1/4000000")


@pytest.mark.parametrize(
    "name",
    ["00000001000000000000000", "0000000100000000000000001", "0000000100000000000000fe",
     "000000010000000000000001.partial", "00000001.history", ""],
)
def test_not_a_segment_name(name: str) -> None:
    assert not is_segment_name(name)
    with pytest.raises(ValueError, match="is not a WAL segment name"):
        parse_segment_name(name, MB16)


def test_history_names() -> None:
    assert history_name(2) == "00000002.history"
    assert history_name(0x1F) == "0000001F.history"
    assert is_history_name("00000002.history")
    assert not is_history_name("2.history")
    assert not is_history_name("00000002.history.partial")
    assert not is_history_name("000000020000000000000001")


def test_parse_history_of_a_real_looking_file() -> None:
    text = (
        "1\t0/3000000\tno recovery target specified\n"
        "\n"
        "2\t0/5000000\tbefore 2026-11-26 09:45:00.000000+00\n"
    )
    assert parse_history(text) == [
        TimelineSwitch(parent=1, switch_lsn=0x3000000),
        TimelineSwitch(parent=2, switch_lsn=0x5000000),
    ]


def test_parse_history_skips_comments_and_blank_lines() -> None:
    text = "# comment\n\n   \n5\t1A/FF000028\tat restore point \"x\"\n"
    assert parse_history(text) == [TimelineSwitch(5, (0x1A << 32) | 0xFF000028)]
    assert parse_history("") == []


def test_parse_history_with_a_bad_lsn_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        parse_history("1\tnot-an-lsn\treason\n")
