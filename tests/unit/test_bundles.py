"""Layout v2 without a server: tar parsing, bundle planning, the file index, the fetch plan,
and a synthetic tar written into bundles and restored back, byte for byte."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from pitrflow.engines.postgres.bundles.fetchplan import PG_CONTROL, plan_fetch
from pitrflow.engines.postgres.bundles.index import (
    FileIndex,
    Frame,
    IndexEntry,
    ObjectRecord,
    dump_index,
    load_index,
)
from pitrflow.engines.postgres.bundles.plan import BundlePlanner
from pitrflow.engines.postgres.bundles.restorer import restore_files
from pitrflow.engines.postgres.bundles.tarparse import (
    BLOCK,
    TarFormatError,
    next_member,
    parse_header,
    read_exact,
)
from pitrflow.engines.postgres.bundles.writer import write_bundles
from pitrflow.errors import ChecksumMismatchError, RepositoryError
from pitrflow.progress import ProgressState, progress_sink
from pitrflow.storage.base import TransferSettings
from pitrflow.storage.fs import FsRepository

KIB = 1024


def make_tar(members: list[tuple[str, str, bytes | str]], manifest: bytes = b"{}") -> bytes:
    """A ustar archive as pg_basebackup writes one: dirs, files, symlinks, backup_manifest last."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, kind, content in [*members, ("backup_manifest", "file", manifest)]:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000 + len(name)
            info.mode = 0o600 if kind == "file" else 0o700
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
                tar.addfile(info)
            else:
                assert isinstance(content, bytes)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    data = out.getvalue()
    # tarfile pads archives to 10 KiB records; PostgreSQL ends right after two zero blocks.
    end = len(data.rstrip(b"\0"))
    end += -end % BLOCK
    return data[:end] + bytes(2 * BLOCK)


def members(data: bytes) -> list[tuple[str, str, int]]:
    stream = io.BytesIO(data)
    found = []
    while (member := next_member(stream, "test")) is not None:
        skip = bytearray(member.size + member.padding)
        read_exact(stream, memoryview(skip), "test")
        found.append((member.name, member.type, member.size))
    return found


# ------------------------------------------------------------------ tarparse

def test_tar_members_are_read_with_their_raw_headers() -> None:
    data = make_tar([("global", "dir", b""), ("./global/1262", "file", b"x" * 8192),
                     ("pg_tblspc/16384", "symlink", "/srv/ts"), ("PG_VERSION", "file", b"18\n")])
    assert members(data) == [("global", "dir", 0), ("global/1262", "file", 8192),
                             ("pg_tblspc/16384", "symlink", 0), ("PG_VERSION", "file", 3),
                             ("backup_manifest", "file", 2)]
    first = parse_header(data[:BLOCK], "test")
    assert first is not None and first.header == data[:BLOCK] and first.mode == 0o700


def test_base_256_sizes_are_read() -> None:
    header = bytearray(tarfile.TarInfo("base/1/big").tobuf(format=tarfile.USTAR_FORMAT))
    size = 9 * 1024**3  # above the 8 GiB octal limit
    header[124:136] = bytes([0x80]) + size.to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    member = parse_header(bytes(header), "test")
    assert member is not None and member.size == size


@pytest.mark.parametrize(("damage", "why"), [
    (lambda h: h.__setitem__(slice(0, 1), b"X"), "fails its checksum"),
    (lambda h: h.__setitem__(slice(0, 100), b"../etc/passwd".ljust(100, b"\0")), "outside"),
    (lambda h: h.__setitem__(slice(156, 157), b"L"), "never emits"),
])
def test_headers_pg_never_writes_are_refused(damage, why: str) -> None:
    header = bytearray(tarfile.TarInfo("global/1262").tobuf(format=tarfile.USTAR_FORMAT))
    damage(header)
    if why != "fails its checksum":
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
    with pytest.raises(TarFormatError, match=why):
        parse_header(bytes(header), "test")


def test_a_cut_stream_is_refused() -> None:
    data = make_tar([("PG_VERSION", "file", b"18\n")])
    with pytest.raises(TarFormatError, match="ends"):
        members(data[: BLOCK + 100])


# ------------------------------------------------------------------ bundle planning

def test_small_members_share_bundles_and_large_files_get_their_own_frames() -> None:
    planner = BundlePlanner(frame_size=4 * KIB, bundle_size=10 * KIB)
    small = planner.place(512, 3000)
    assert (small.object, small.kind, small.closes) == ("bundle-000001.tar.zst", "bundle", ())
    assert [(c.raw_offset, c.raw_length) for c in small.cuts] == [(0, 512 + 3072)]
    large = planner.place(512, 9000)
    assert large.object == "file-000002.tar.zst" and large.closes == (large.object,)
    assert [(c.data_offset, c.data_length, c.with_header, c.with_padding) for c in large.cuts] \
        == [(0, 4096, True, False), (4096, 4096, False, False), (8192, 808, False, True)]
    assert [c.raw_offset for c in large.cuts] == [0, 4608, 8704]
    assert large.cuts[-1].raw_length == 808 + (-9000 % 512)
    # The bundle stayed open across the large file, and closes once it holds 10 KiB.
    again = planner.place(512, 4096)
    assert again.object == "bundle-000001.tar.zst" and again.cuts[0].raw_offset == 3584
    closing = planner.place(512, 4096)
    assert closing.closes == ("bundle-000001.tar.zst",)
    assert planner.place(512, 0).object == "bundle-000003.tar.zst"
    assert planner.finish() == ("bundle-000003.tar.zst",)


# ------------------------------------------------------------------ index

def _index() -> FileIndex:
    big_frames = tuple(Frame("file-000002.tar.zst", i * 1000, 1000, i * 4096, 4096,
                             f"{i:064x}", "0") for i in range(3))
    return FileIndex(
        entries=(
            IndexEntry("global", "dir", 0, 0o700, 1),
            IndexEntry(PG_CONTROL, "file", 8192, 0o600, 2, checksum="aabbccdd",
                       frames=(Frame("bundle-000001.tar.zst", 0, 300, 0, 8704, "a" * 64, "1"),)),
            IndexEntry("base/1/1259", "file", 11000, 0o600, 3, checksum="01020304",
                       frames=big_frames),
            IndexEntry("PG_VERSION", "file", 3, 0o600, 4, checksum="00ff00ff",
                       frames=(Frame("bundle-000001.tar.zst", 300, 60, 8704, 1024, "b" * 64),)),
            IndexEntry("pg_tblspc/1", "symlink", 0, 0o777, 5, link="/srv/ts"),
        ),
        objects=(ObjectRecord("bundle-000001.tar.zst", 400, "c" * 64, 10752, "bundle"),
                 ObjectRecord("file-000002.tar.zst", 3040, "d" * 64, 13312, "file")),
        frame_size=4096, bundle_size=10 * KIB)


def test_index_round_trip_and_data_ranges() -> None:
    index = _index()
    loaded = load_index(dump_index(index), "k")
    assert loaded == index and loaded.entry("PG_VERSION") == index.entries[3]
    big = index.entries[2]
    assert [big.data_range(f) for f in big.frames] == [(512, 4096, 0), (0, 4096, 3584),
                                                       (0, 3320, 7680)]


def test_index_that_is_damaged_or_escapes_is_refused() -> None:
    with pytest.raises(RepositoryError, match="cannot be read"):
        load_index(dump_index(_index())[:-3], "k")
    text = dump_index(_index())
    raw = zstandard.ZstdDecompressor().decompress(text).replace(b'"PG_VERSION"', b'"../etc/x"')
    with pytest.raises(RepositoryError, match="outside the data directory"):
        load_index(zstandard.ZstdCompressor().compress(raw), "k")


def test_fetch_plan_reads_the_control_file_last_and_large_files_in_runs() -> None:
    plan = plan_fetch(_index())
    assert [(r.object, r.whole) for r in plan.last] == [("bundle-000001.tar.zst", False)]
    assert [f.path for r in plan.last for f, _ in r.frames] == [PG_CONTROL]
    objects = {(r.object, r.whole) for r in plan.reads}
    assert objects == {("file-000002.tar.zst", False), ("bundle-000001.tar.zst", False)}
    assert plan.data_bytes == 8192 + 11000 + 3
    only = plan_fetch(_index(), wanted={"PG_VERSION": None})
    assert [f.path for r in only.reads for f, _ in r.frames] == ["PG_VERSION"]
    assert only.last == () and only.data_bytes == 3


# ------------------------------------------------------------------ writer + restorer

def _files(n_small: int, seed: int) -> list[tuple[str, str, bytes | str]]:
    rnd = __import__("random").Random(seed)
    items: list[tuple[str, str, bytes | str]] = [("global", "dir", b""), ("base", "dir", b""),
                                                  ("base/1", "dir", b"")]
    items.append((PG_CONTROL, "file", os.urandom(8192)))
    for i in range(n_small):
        size = rnd.choice([0, 3, 511, 512, 8192, 20000])
        items.append((f"base/1/{1000 + i}", "file", os.urandom(size // 2) * 2))
    items.append(("base/1/big", "file", os.urandom(40 * KIB + 7)))  # 10 frames of 4 KiB + 7
    items.append(("pg_wal", "dir", b""))
    items.append(("pg_wal/archive_status", "dir", b""))
    items.append(("pg_tblspc", "dir", b""))
    items.append(("pg_tblspc/16384", "symlink", "/nonexistent/ts"))
    return items


def _write(tmp_path: Path, threads: int, items: list[tuple[str, str, bytes | str]]):  # noqa: ANN202
    repo = FsRepository(tmp_path / "repo")
    settings = TransferSettings(process_max=threads, bundle_size=16 * KIB, frame_size=4 * KIB)
    published: list[str] = []
    written = write_bundles(io.BytesIO(make_tar(items, b'{"m": 1}')), repo, "b/", settings, 3,
                            published)
    return repo, written, published


@pytest.mark.parametrize("threads", [1, 3])
def test_a_tar_written_into_bundles_restores_byte_for_byte(tmp_path: Path, threads: int) -> None:
    items = _files(40, seed=threads)
    repo, written, published = _write(tmp_path, threads, items)
    assert written.pg_manifest == b'{"m": 1}'
    assert sorted(published) == sorted("b/" + o.name for o in written.index.objects)
    assert any(o.kind == "file" for o in written.index.objects)
    assert len([o for o in written.index.objects if o.kind == "bundle"]) > 1
    for record in written.index.objects:
        data = (tmp_path / "repo" / "b" / record.name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record.sha256
        # Each object alone is a whole tar archive: zstd -d | tar -t works by hand.
        listing = subprocess.run("zstd -dc | tar -t", shell=True, input=data,
                                 capture_output=True, check=True).stdout.decode().split()
        assert listing
    seen: list[ProgressState] = []
    dest = tmp_path / "restored"
    dest.mkdir()
    with progress_sink(seen.append):
        restore_files(repo, "b/", load_index(dump_index(written.index), "i"), dest, user=None,
                      threads=threads)
    for name, kind, content in items:
        path = dest / name.removeprefix("./")
        if kind == "file":
            assert path.read_bytes() == content, name
            assert path.stat().st_mtime == 1_700_000_000 + len(name)
            assert path.stat().st_mode & 0o777 == 0o600
        elif kind == "symlink":
            assert os.readlink(path) == content
        else:
            assert path.is_dir()
    assert seen[-1].finished and seen[-1].percent == 100
    assert seen[-1].done == sum(len(c) for _, k, c in items if k == "file")


def test_crc32c_is_recorded_as_backup_manifest_writes_it(tmp_path: Path) -> None:
    import crc32c

    items = _files(3, seed=7)
    _, written, _ = _write(tmp_path, 2, items)
    for name, kind, content in items:
        if kind == "file":
            entry = written.index.entry(name)
            assert entry is not None
            assert entry.checksum == crc32c.crc32c(content).to_bytes(4, "little").hex()


@pytest.mark.parametrize("victim", ["bundle", "file"])
def test_a_flipped_byte_fails_naming_object_and_file(tmp_path: Path, victim: str) -> None:
    items = _files(20, seed=3)
    repo, written, _ = _write(tmp_path, 2, items)
    if victim == "file":
        entry = written.index.entry("base/1/big")
        assert entry is not None
        frame = entry.frames[4]
    else:
        entry = max((e for e in written.index.entries if e.frames and e.path != PG_CONTROL
                     and e.frames[0].object.startswith("bundle")), key=lambda e: e.size)
        frame = entry.frames[0]
    path = tmp_path / "repo" / "b" / frame.object
    data = bytearray(path.read_bytes())
    data[frame.offset + frame.length // 2] ^= 0x01
    path.write_bytes(bytes(data))
    dest = tmp_path / "restored"
    dest.mkdir()
    with pytest.raises(ChecksumMismatchError) as caught:
        restore_files(repo, "b/", written.index, dest, user=None, threads=2)
    assert f"object b/{frame.object}" in caught.value.message
    assert f"(file {entry.path})" in caught.value.message
    assert not (dest / PG_CONTROL).exists()


def test_files_are_held_against_the_servers_backup_manifest(tmp_path: Path) -> None:
    import json

    import crc32c

    from pitrflow.engines.postgres.bundles.crosscheck import check_against_pg_manifest
    from pitrflow.errors import CommandFailedError

    items = _files(2, seed=11)
    _, written, _ = _write(tmp_path, 1, items)
    files = [{"Path": n, "Size": len(c), "Checksum-Algorithm": "CRC32C",
              "Checksum": crc32c.crc32c(c).to_bytes(4, "little").hex()}
             for n, k, c in items if k == "file"]
    manifest = {"Files": files}
    assert check_against_pg_manifest(written.index, json.dumps(manifest).encode(), "b") == \
        len(files)
    files[1] = {**files[1], "Checksum": "deadbeef"}
    with pytest.raises(CommandFailedError, match=f"file {files[1]['Path']} has CRC32C"):
        check_against_pg_manifest(written.index, json.dumps(manifest).encode(), "b")
    files[1] = {"Path": "base/1/never_sent", "Size": 1, "Checksum-Algorithm": "CRC32C",
                "Checksum": "00000000"}
    with pytest.raises(CommandFailedError, match="base/1/never_sent is in the server's"):
        check_against_pg_manifest(written.index, json.dumps(manifest).encode(), "b")


def test_delta_fetches_only_the_frames_that_differ(tmp_path: Path) -> None:
    from pitrflow.engines.postgres.bundles.delta import check_files, plan_delta, scan_data_dir

    items = _files(10, seed=5)
    repo, written, _ = _write(tmp_path, 2, items)
    dest = tmp_path / "restored"
    dest.mkdir()
    restore_files(repo, "b/", written.index, dest, user=None, threads=2)
    big, small = dest / "base/1/big", dest / "base/1/1003"
    original_big, original_small = big.read_bytes(), small.read_bytes()
    with open(big, "r+b") as handle:  # one frame's bytes changed, and the file grew
        handle.seek(5 * 4096 + 100)
        handle.write(b"changed")
        handle.seek(0, 2)
        handle.write(b"more at the end")
    small.write_bytes(b"z" * len(original_small))
    (dest / "base/1/stray").write_bytes(b"x")

    plan = plan_delta(written.index, scan_data_dir(dest), 2e9, trust_mtime=False)
    check_files(plan, written.index, dest, threads=2)
    entry = written.index.entry("base/1/big")
    assert entry is not None
    # Frame 0 also holds the header, so the file's 6th 4 KiB chunk is in frame 5 or 6.
    assert plan.patch == {"base/1/big": [n for n, f in enumerate(entry.frames)
                                         if entry.data_range(f)[2] <= 5 * 4096 + 100
                                         < entry.data_range(f)[2] + 4096]}
    assert "base/1/1003" in plan.write and plan.remove == ["base/1/stray"]
    fetched: list[ProgressState] = []
    with progress_sink(fetched.append):
        restore_files(repo, "b/", written.index, dest, user=None, threads=2,
                      wanted=plan.wanted())
    for path in plan.remove:
        (dest / path).unlink()
    assert big.read_bytes() == original_big and small.read_bytes() == original_small
    # The changed frame, the rewritten small file, and the control file (always written last).
    assert fetched[-1].done == plan.write_bytes(written.index) + 8192 < 4096 + 20000 + 8192
    for name, kind, content in items:
        if kind == "file":
            assert (dest / name).read_bytes() == content, name


def test_a_failed_commit_fails_the_write_and_leaves_only_listed_keys(tmp_path: Path) -> None:
    from pitrflow.errors import RepositoryError

    class BrokenSecondCommit(FsRepository):
        def open_writer(self, key: str):  # noqa: ANN201
            writer = super().open_writer(key)
            if key.endswith("-000002.tar.zst"):
                def commit():  # noqa: ANN202
                    raise RepositoryError(f"upload of {key} failed", "try again")
                writer.commit = commit  # type: ignore[method-assign]
            return writer

    repo = BrokenSecondCommit(tmp_path / "repo")
    settings = TransferSettings(process_max=2, bundle_size=16 * KIB, frame_size=4 * KIB)
    published: list[str] = []
    with pytest.raises(RepositoryError, match="-000002.tar.zst failed"):
        write_bundles(io.BytesIO(make_tar(_files(40, seed=2))), repo, "b/", settings, 3,
                      published)
    for key in published:
        repo.delete(key)
    # Nothing is left: no object, no temporary file of an aborted writer.
    left = list((tmp_path / "repo" / "b").iterdir()) if (tmp_path / "repo" / "b").exists() else []
    assert left == [], [p.name for p in left]
