"""Self-checksummed backup manifests and ship marks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pitrflow.catalog.records import dump_record, load_record
from pitrflow.engines.postgres.catalog.manifest import (
    LAYOUT_BUNDLES,
    LAYOUT_STREAM,
    BackupManifest,
    FileEntry,
    Mark,
    dump_manifest,
    dump_mark,
    load_manifest,
    load_mark,
)
from pitrflow.errors import RepositoryError

KEY = "main/backups/20261126T090000Z/manifest.json"
MARK_KEY = "main/marks/20261126T094500.000000Z_00000001_0000000005000060.json"

MANIFEST = BackupManifest(
    id="20261126T090000Z",
    instance="main",
    engine="postgresql",
    type="incremental",
    parent="20261125T090000Z",
    start_time=datetime(2026, 11, 26, 9, 0, 0, 123456, tzinfo=UTC),
    stop_time=datetime(2026, 11, 26, 10, 0, 5, tzinfo=timezone(timedelta(hours=1))),
    start_lsn=0x1A_FF000028,
    stop_lsn=0x1B_00000138,
    timeline=3,
    server_version=180001,
    system_identifier="7441234567890123456",
    segment_size=16 * 1024 * 1024,
    files=(
        FileEntry("base.tar.zst", 123_456_789, "a" * 64),
        FileEntry("backup_manifest", 2048, "b" * 64),
    ),
    database_size_bytes=987_654_321,
    duration_seconds=3605.25,
    compression="zstd:3",
    tool_version="0.1.0",
    extra={"summarize_wal": True, "labels": ["nightly"]},
)

MARK = Mark(
    instance="main",
    timeline=1,
    lsn=0x5000060,
    time=datetime(2026, 11, 26, 9, 45, 0, 500000, tzinfo=UTC),
    last_segment="000000010000000000000005",
)


def test_manifest_round_trip() -> None:
    data = dump_manifest(MANIFEST)
    loaded = load_manifest(data, KEY)
    assert loaded == MANIFEST
    assert loaded.start_time.utcoffset() == timedelta(0)
    assert loaded.stop_time.utcoffset() == timedelta(hours=1)
    assert loaded.files[0] == FileEntry("base.tar.zst", 123_456_789, "a" * 64)
    assert loaded.size_bytes == 123_456_789 + 2048
    assert loaded.file("backup_manifest") == FileEntry("backup_manifest", 2048, "b" * 64)
    assert loaded.file("nope") is None


def test_full_manifest_round_trip_keeps_parent_none() -> None:
    full = BackupManifest(**{**MANIFEST.__dict__, "type": "full", "parent": None, "extra": {}})
    assert load_manifest(dump_manifest(full), KEY) == full


def test_manifest_is_readable_json_with_kind_format_and_checksum() -> None:
    doc = json.loads(dump_manifest(MANIFEST))
    assert doc["kind"] == "backup"
    assert doc["format"] == 1
    assert len(doc["checksum"]) == 64
    assert doc["start_lsn"] == 0x1A_FF000028
    assert doc["stop_time"] == "2026-11-26T10:00:05+01:00"


def test_dump_is_deterministic() -> None:
    assert dump_manifest(MANIFEST) == dump_manifest(MANIFEST)


def test_mark_round_trip() -> None:
    loaded = load_mark(dump_mark(MARK), MARK_KEY)
    assert loaded == MARK
    assert loaded.time.tzinfo is not None


def test_record_round_trip() -> None:
    body = {"instance": "main", "ok": True, "rows": 12}
    doc = load_record("drill", dump_record("drill", body), "main/drills/x.json")
    assert doc == {"format": 1, "kind": "drill", **body}


def test_edited_field_fails_its_own_checksum() -> None:
    doc = json.loads(dump_manifest(MANIFEST))
    doc["database_size_bytes"] += 1
    edited = json.dumps(doc).encode()
    with pytest.raises(RepositoryError) as caught:
        load_manifest(edited, KEY)
    assert caught.value.message == f"{KEY} fails its own checksum"
    assert "pitr verify" in (caught.value.hint or "")


def test_flipped_byte_fails_its_own_checksum() -> None:
    data = bytearray(dump_manifest(MANIFEST))
    index = data.index(b"7441234567890123456")
    data[index] ^= 0x01  # '7' -> '6': still valid JSON, different value
    with pytest.raises(RepositoryError, match="fails its own checksum") as caught:
        load_manifest(bytes(data), KEY)
    assert KEY in caught.value.message


def test_edited_mark_fails_its_own_checksum() -> None:
    doc = json.loads(dump_mark(MARK))
    doc["lsn"] = doc["lsn"] + 0x1000000
    with pytest.raises(RepositoryError) as caught:
        load_mark(json.dumps(doc).encode(), MARK_KEY)
    assert caught.value.message == f"{MARK_KEY} fails its own checksum"


def test_edited_checksum_fails() -> None:
    doc = json.loads(dump_manifest(MANIFEST))
    doc["checksum"] = "0" * 64
    with pytest.raises(RepositoryError, match="fails its own checksum"):
        load_manifest(json.dumps(doc).encode(), KEY)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", dump_manifest(MANIFEST)[:-10], b'{"kind": "backup"}', b'"text"', b"42",
     b"\x80\x81 not utf-8"],
    ids=["empty", "brace", "truncated", "no-checksum", "string", "number", "binary"],
)
def test_not_a_manifest_at_all(data: bytes) -> None:
    with pytest.raises(RepositoryError) as caught:
        load_manifest(data, KEY)
    assert caught.value.message == f"{KEY} is not a valid pitrflow backup"


def test_json_array_is_not_a_manifest() -> None:
    with pytest.raises(RepositoryError):
        load_manifest(b"[1, 2]", KEY)


def test_mark_loaded_as_manifest_is_the_wrong_kind() -> None:
    with pytest.raises(RepositoryError) as caught:
        load_manifest(dump_mark(MARK), KEY)
    assert caught.value.message == f"{KEY} is not a format-1/2 backup"


def test_manifest_loaded_as_mark_is_the_wrong_kind() -> None:
    with pytest.raises(RepositoryError) as caught:
        load_mark(dump_manifest(MANIFEST), MARK_KEY)
    assert caught.value.message == f"{MARK_KEY} is not a format-1 mark"


def test_record_of_another_kind_is_rejected() -> None:
    with pytest.raises(RepositoryError, match="is not a format-1 verify"):
        load_record("verify", dump_record("drill", {"ok": True}), "main/verify/x.json")


def _resealed(doc: dict[str, object]) -> bytes:
    doc.pop("checksum", None)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    doc["checksum"] = hashlib.sha256(canonical).hexdigest()
    return json.dumps(doc).encode()


def test_newer_format_is_rejected() -> None:
    # Sealed correctly, but as format 3 (as a newer pitrflow would write it).
    doc = json.loads(dump_manifest(MANIFEST))
    doc["format"] = 3
    with pytest.raises(RepositoryError) as caught:
        load_manifest(_resealed(doc), KEY)
    assert caught.value.message == f"{KEY} is not a format-1/2 backup"
    assert "newer pitrflow" in (caught.value.hint or "")


V2 = replace(MANIFEST, layout=LAYOUT_BUNDLES, index="index.json.zst",
             files=(FileEntry("backup_manifest", 2048, "b" * 64),
                    FileEntry("index.json.zst", 900, "c" * 64),
                    FileEntry("bundle-000001.tar.zst", 5_000_000, "d" * 64)))


def test_v1_manifest_keeps_format_1_and_its_old_shape() -> None:
    doc = json.loads(dump_manifest(MANIFEST))
    assert doc["format"] == 1 and "layout" not in doc and "index" not in doc
    assert load_manifest(dump_manifest(MANIFEST), KEY).layout == LAYOUT_STREAM


def test_v2_manifest_round_trip_is_format_2() -> None:
    data = dump_manifest(V2)
    doc = json.loads(data)
    assert doc["format"] == 2 and doc["layout"] == "bundles" and doc["index"] == "index.json.zst"
    assert load_manifest(data, KEY) == V2


def test_layout_and_format_must_agree() -> None:
    v2_as_format_1 = json.loads(dump_manifest(V2))
    v2_as_format_1["format"] = 1
    with pytest.raises(RepositoryError, match="layout 'bundles' in format 1"):
        load_manifest(_resealed(v2_as_format_1), KEY)
    stream_as_format_2 = json.loads(dump_manifest(MANIFEST))
    stream_as_format_2["format"] = 2
    with pytest.raises(RepositoryError, match="layout 'stream' in format 2"):
        load_manifest(_resealed(stream_as_format_2), KEY)
    no_index = json.loads(dump_manifest(V2))
    no_index["index"] = None
    with pytest.raises(RepositoryError, match="layout 'bundles' in format 2"):
        load_manifest(_resealed(no_index), KEY)


def test_sealed_backup_record_missing_fields_is_rejected() -> None:
    with pytest.raises(RepositoryError) as caught:
        load_manifest(dump_record("backup", {"id": "x"}), KEY)
    assert caught.value.message.startswith(f"{KEY} lacks a valid field: ")
