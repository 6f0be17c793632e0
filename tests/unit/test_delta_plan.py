"""The delta restore plan (pure) and the CRC32C comparison of local files."""

from __future__ import annotations

from pathlib import Path

import crc32c

from pitrflow.engines.postgres.bundles.delta import (
    LocalFile,
    check_files,
    plan_delta,
    scan_data_dir,
)
from pitrflow.engines.postgres.bundles.index import FileIndex, Frame, IndexEntry

START = 1_800_000_000.0  # the backup's start
OLD, RECENT = 1_700_000_000, int(START)


def entry(path: str, size: int = 0, kind: str = "file", mtime: int = OLD, link: str = "",
          checksum: str = "") -> IndexEntry:
    raw = 512 + size + (-size % 512)
    frames = (Frame("bundle-000001.tar.zst", 0, 10, 0, raw, "a" * 64),) if kind == "file" else ()
    return IndexEntry(path, kind, size, 0o600, mtime, link=link, checksum=checksum,
                      frames=frames)


INDEX = FileIndex(entries=(
    entry("base", kind="dir"), entry("base/5", kind="dir"),
    entry("base/5/same", 100), entry("base/5/touched", 100),
    entry("base/5/recent", 100, mtime=RECENT), entry("base/5/grown", 200),
    entry("base/5/missing", 50), entry("global", kind="dir"), entry("global/pg_control", 8192),
    entry("pg_tblspc", kind="dir"), entry("pg_tblspc/1", kind="symlink", link="/srv/a"),
    entry("was_a_dir", 10),
), objects=(), frame_size=1 << 20, bundle_size=1 << 25)

LOCAL = {f.path: f for f in (
    LocalFile("base", "dir", 0, OLD), LocalFile("base/5", "dir", 0, OLD),
    LocalFile("base/5/same", "file", 100, OLD), LocalFile("base/5/touched", "file", 100, OLD + 5),
    LocalFile("base/5/recent", "file", 100, RECENT), LocalFile("base/5/grown", "file", 100, OLD),
    LocalFile("base/5/dropped", "file", 8192, OLD), LocalFile("global", "dir", 0, OLD),
    LocalFile("pg_wal", "dir", 0, OLD),
    LocalFile("pg_wal/000000010000000000000009", "file", 16, OLD),
    LocalFile("pg_tblspc", "dir", 0, OLD), LocalFile("pg_tblspc/1", "symlink", 0, OLD, "/srv/b"),
    LocalFile("was_a_dir", "dir", 0, OLD), LocalFile("was_a_dir/inside", "file", 1, OLD),
    LocalFile("postmaster.pid", "file", 80, OLD),
)}


def test_plan_keeps_checks_writes_and_removes() -> None:
    plan = plan_delta(INDEX, LOCAL, START, trust_mtime=False)
    assert sorted(plan.check) == ["base/5/recent", "base/5/same", "base/5/touched"]
    assert plan.keep == []
    assert sorted(plan.write) == ["base/5/grown", "base/5/missing", "global/pg_control",
                                  "was_a_dir"]
    # Top-most paths only: pg_wal takes its segments with it, was_a_dir what is inside.
    assert plan.remove == ["base/5/dropped", "pg_tblspc/1", "pg_wal", "postmaster.pid",
                           "was_a_dir"]


def test_trusting_mtimes_keeps_only_old_untouched_files() -> None:
    plan = plan_delta(INDEX, LOCAL, START, trust_mtime=True)
    # Same size and mtime, older than the backup's start: kept without reading it.
    assert plan.keep == ["base/5/same"]
    # Another mtime, or one as recent as the backup's start: its CRC32C decides.
    assert sorted(plan.check) == ["base/5/recent", "base/5/touched"]


def test_an_empty_directory_is_written_whole() -> None:
    plan = plan_delta(INDEX, {}, START, trust_mtime=True)
    assert plan.keep == [] and plan.check == [] and plan.remove == []
    assert len(plan.write) == len([e for e in INDEX.entries if e.type == "file"])
    assert plan.write_bytes(INDEX) == sum(e.size for e in INDEX.entries)


def test_checksums_decide_what_is_rewritten(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 100)
    (tmp_path / "b").write_bytes(b"y" * 100)
    (tmp_path / "link").symlink_to("/nonexistent")
    good = crc32c.crc32c(b"x" * 100).to_bytes(4, "little").hex()
    index = FileIndex(entries=(entry("a", 100, checksum=good), entry("b", 100, checksum=good),
                               entry("link", kind="symlink", link="/nonexistent")),
                      objects=(), frame_size=1 << 20, bundle_size=1 << 25)
    local = scan_data_dir(tmp_path)
    assert local["link"].type == "symlink" and local["link"].link == "/nonexistent"
    plan = plan_delta(index, local, START, trust_mtime=False)
    assert sorted(plan.check) == ["a", "b"] and plan.remove == []
    check_files(plan, index, tmp_path, threads=2)
    assert (plan.keep, plan.write, plan.check) == (["a"], ["b"], [])
