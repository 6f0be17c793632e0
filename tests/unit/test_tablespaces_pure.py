"""Tablespaces and one-database restores without a server: placement, selection, the
multi-archive bundle writer and reader, and reading a file another process still writes."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pitrflow.engines.base import RestoreDestination, tablespace_pairs
from pitrflow.engines.postgres.backup.staging import GrowingFile, Writer, decompressed
from pitrflow.engines.postgres.backup.tablespaced import staging_compressions
from pitrflow.engines.postgres.bundles.index import dump_index, load_index
from pitrflow.engines.postgres.bundles.plan import tablespace_object_prefix
from pitrflow.engines.postgres.bundles.restorer import restore_files
from pitrflow.engines.postgres.bundles.tarparse import BLOCK
from pitrflow.engines.postgres.bundles.writer import TarSource, write_archives
from pitrflow.engines.postgres.catalog.cluster import (
    Database,
    Tablespace,
    layout_extra,
    merge_databases,
)
from pitrflow.engines.postgres.catalog.manifest import (
    LAYOUT_BUNDLES,
    LAYOUT_STREAM,
    BackupManifest,
)
from pitrflow.engines.postgres.restore.placement import (
    check_tablespace_dirs,
    excluded_databases,
    place_tablespaces,
    zeroed_paths,
)
from pitrflow.errors import CommandFailedError, RestoreRefusedError, UsageError
from pitrflow.storage.base import TransferSettings
from pitrflow.storage.fs import FsRepository

KIB = 1024
SPACES = (Tablespace(16384, "ts_a", "/data/ts_a"), Tablespace(16390, "ts_b", "/data/ts_b"))
DATABASES = (Database(1, "template1"), Database(4, "template0"), Database(5, "postgres"),
             Database(16400, "app"), Database(16401, "reports"))


def manifest(layout: str = LAYOUT_BUNDLES, databases: bool = True,
             tablespaces: tuple[Tablespace, ...] = SPACES) -> BackupManifest:
    extra = layout_extra(tablespaces, DATABASES)
    if not databases:
        del extra["databases"]
    now = datetime(2026, 11, 26, tzinfo=UTC)
    return BackupManifest(
        id="20261126T000000Z-F", instance="main", engine="postgresql", type="full",
        parent=None, start_time=now, stop_time=now, start_lsn=1, stop_lsn=2, timeline=1,
        server_version=180000, system_identifier="1", segment_size=16 << 20, files=(),
        database_size_bytes=0, duration_seconds=0, compression="", tool_version="",
        extra=extra, layout=layout, index="index.json.zst" if layout == LAYOUT_BUNDLES else None)


# ------------------------------------------------------------------ placement

def test_tablespaces_go_to_recorded_locations_unless_remapped(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    placed = place_tablespaces(manifest(), (), None, pgdata)
    assert [(p.tablespace.name, str(p.target), p.moved) for p in placed] == [
        ("ts_a", "/data/ts_a", False), ("ts_b", "/data/ts_b", False)]
    by_name_and_oid = place_tablespaces(manifest(), (("ts_a", "/x/a"), ("16390", "/x/b")), None,
                                        pgdata)
    assert [str(p.target) for p in by_name_and_oid] == ["/x/a", "/x/b"]
    assert all(p.moved for p in by_name_and_oid)
    mixed = place_tablespaces(manifest(), (("16384", "/x/a"),), "/all", pgdata)
    assert [str(p.target) for p in mixed] == ["/x/a", "/all/ts_b"]
    assert "ts_b (OID 16390) -> /all/ts_b (recorded at /data/ts_b)" == mixed[1].describe()


@pytest.mark.parametrize(("mapping", "map_all", "words"), [
    ((("nope", "/x"),), None, ["holds no tablespace 'nope'", "ts_a (OID 16384, /data/ts_a)",
                               "ts_b (OID 16390, /data/ts_b)"]),
    ((("ts_a", "/x"), ("16384", "/y")), None, ["names tablespace ts_a twice"]),
    ((("ts_a", "/srv/pgdata/ts"),), None, ["overlaps the data directory"]),
    ((("ts_a", "/x/a"), ("ts_b", "/x/a/b")), None, ["would share"]),
    ((), "/srv/pgdata", ["overlaps the data directory"]),
])
def test_bad_tablespace_maps_are_one_line(mapping: tuple[tuple[str, str], ...],
                                          map_all: str | None, words: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        place_tablespaces(manifest(), mapping, map_all, Path("/srv/pgdata"))
    for word in words:
        assert word in caught.value.message


def test_a_map_for_a_backup_without_tablespaces_is_refused() -> None:
    with pytest.raises(UsageError, match="holds no tablespace 'ts_a'; it holds: none"):
        place_tablespaces(manifest(tablespaces=()), (("ts_a", "/x"),), None, Path("/p"))
    assert place_tablespaces(manifest(tablespaces=()), (), "/all", Path("/p")) == ()


def test_tablespace_directories_must_be_new_or_empty(tmp_path: Path) -> None:
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / "PG_18_202506291").mkdir()
    ok = place_tablespaces(manifest(), (("ts_a", str(empty)), ("ts_b", str(tmp_path / "new"))),
                           None, tmp_path / "pgdata")
    check_tablespace_dirs(ok)
    moved = place_tablespaces(manifest(), (("ts_a", str(full)),), str(tmp_path / "all"),
                              tmp_path / "pgdata")
    with pytest.raises(RestoreRefusedError, match=f"{full} \\(for ts_a\\) is not empty"):
        check_tablespace_dirs(moved)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]  # nothing made


def test_tablespace_pairs_from_flags_dicts_and_one_string() -> None:
    assert tablespace_pairs(["ts_a=/x", "16390 = /y/z=w"]) == (("ts_a", "/x"), ("16390", "/y/z=w"))
    assert tablespace_pairs({"ts_a": "/x"}) == (("ts_a", "/x"),)
    assert tablespace_pairs("ts_a=/x, ts_b=/y\nts_c=/z") == (
        ("ts_a", "/x"), ("ts_b", "/y"), ("ts_c", "/z"))
    assert tablespace_pairs(None) == tablespace_pairs("") == ()
    with pytest.raises(UsageError, match="is not NAME_OR_OID=DIR"):
        tablespace_pairs(["ts_a"])
    with pytest.raises(UsageError, match="needs a name"):
        tablespace_pairs(["=/x"])
    destination = RestoreDestination(pgdata="/p", tablespace_map=(("ts_a", "/x"),),
                                     tablespace_map_all="/all", db_include=("app",))
    params = destination.flow_parameters()
    assert params["tablespace_map"] == {"ts_a": "/x"} and params["db_include"] == ["app"]
    assert RestoreDestination().flow_parameters()["tablespace_map"] is None


# ------------------------------------------------------------------ databases

def test_db_include_leaves_out_every_other_user_database() -> None:
    assert excluded_databases(manifest(), ()) == ()
    assert [d.name for d in excluded_databases(manifest(), ("app",))] == ["reports"]
    assert excluded_databases(manifest(), ("app", "reports")) == ()
    # A recreated postgres keeps its name, and with it its place among the system ones.
    assert Database(16500, "postgres").is_system and not Database(16500, "app").is_system


@pytest.mark.parametrize(("backup", "include", "words"), [
    (manifest(), ("nope",), ["holds no database 'nope'",
                             "it holds: app, postgres, reports, template0, template1"]),
    (manifest(layout=LAYOUT_STREAM), ("app",), ["single-stream (v1)", "file index"]),
    (manifest(databases=False), ("app",), ["records no list of databases"]),
])
def test_db_include_refusals_are_one_line(backup: BackupManifest, include: tuple[str, ...],
                                          words: list[str]) -> None:
    with pytest.raises((UsageError, RestoreRefusedError)) as caught:
        excluded_databases(backup, include)
    for word in words:
        assert word in caught.value.message  # type: ignore[attr-defined]


def test_merged_databases_keep_the_first_name_seen() -> None:
    merged = merge_databases([(5, "postgres"), (16400, "app")], [(16400, "renamed"), (16402, "x")])
    assert [(d.oid, d.name) for d in merged] == [(5, "postgres"), (16400, "app"), (16402, "x")]


def test_staging_compression_prefers_zstd_and_the_configured_side() -> None:
    assert staging_compressions(18, 2, "worker") == [
        "server-zstd:level=1,workers=2", "client-zstd:level=1", "client-gzip:level=1",
        "server-gzip:level=1"]
    assert staging_compressions(18, 1, "server")[-2:] == ["server-gzip:level=1",
                                                          "client-gzip:level=1"]
    assert staging_compressions(14, 2, "worker") == ["client-zstd:level=1",
                                                     "client-gzip:level=1"]


# ------------------------------------------------------------------ the writer and the restorer

def tar_of(members: list[tuple[str, str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, kind, content in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            info.mode = 0o600 if kind == "file" else 0o700
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    data = out.getvalue()
    end = len(data.rstrip(b"\0"))
    end += -end % BLOCK
    return data[:end] + bytes(2 * BLOCK)


def test_archives_of_tablespaces_restore_through_their_links(tmp_path: Path) -> None:
    version = "PG_18_202506291"
    base = tar_of([("global", "dir", b""), ("global/pg_control", "file", os.urandom(8192)),
                   ("base", "dir", b""), ("base/16400", "dir", b""),
                   ("base/16400/1259", "file", os.urandom(9000)),
                   ("base/16401", "dir", b""), ("base/16401/1259", "file", os.urandom(5000)),
                   ("pg_tblspc", "dir", b""), ("tablespace_map", "file", b"16384 /data/ts_a\n"),
                   ("backup_manifest", "file", b'{"m": 1}')])
    space = tar_of([(version, "dir", b""), (f"{version}/16400", "dir", b""),
                    (f"{version}/16400/16500", "file", os.urandom(20 * KIB + 3)),
                    (f"{version}/16401", "dir", b""),
                    (f"{version}/16401/16501", "file", os.urandom(3000))])
    repo = FsRepository(tmp_path / "repo")
    settings = TransferSettings(process_max=2, bundle_size=16 * KIB, frame_size=4 * KIB)
    published: list[str] = []
    sources = [TarSource(io.BytesIO(space), "16384.tar", "pg_tblspc/16384/",
                         tablespace_object_prefix(16384)),
               TarSource(io.BytesIO(base), "base.tar")]
    index, pg_manifest, _ = write_archives(sources, repo, "b/", settings, 3, published)
    assert pg_manifest == b'{"m": 1}'
    assert index.entry(f"pg_tblspc/16384/{version}/16400/16500") is not None
    space_objects = {f.object for e in index.entries if e.path.startswith("pg_tblspc/16384/")
                     for f in e.frames}
    assert space_objects and all(o.startswith("tblspc-16384-") for o in space_objects)
    assert not any(o.startswith("tblspc-") for e in index.entries
                   if not e.path.startswith("pg_tblspc/16384/") for o in e.objects)
    # Each tablespace object unpacks by hand into the tablespace's own directory.
    name = sorted(space_objects)[0]
    listing = subprocess.run("zstd -dc | tar -t", shell=True, capture_output=True, check=True,
                             input=(tmp_path / "repo" / "b" / name).read_bytes()).stdout.decode()
    assert listing.startswith(f"{version}/")

    index = load_index(dump_index(index.__class__(
        entries=index.entries, objects=index.objects, frame_size=index.frame_size,
        bundle_size=index.bundle_size, tablespaces=(SPACES[0],))), "i")
    assert index.version == 2 and index.tablespaces == (SPACES[0],)
    dest, target = tmp_path / "pgdata", tmp_path / "elsewhere" / "ts_a"
    dest.mkdir()
    zeroed = zeroed_paths(index, (Database(16401, "reports"),))
    assert zeroed == {"base/16401/1259", f"pg_tblspc/16384/{version}/16401/16501"}
    restore_files(repo, "b/", index, dest, user=None, threads=2, tablespaces={16384: target},
                  zeroed=zeroed)
    assert os.readlink(dest / "pg_tblspc" / "16384") == str(target)
    kept = target / version / "16400" / "16500"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == hashlib.sha256(
        tarfile.open(fileobj=io.BytesIO(space)).extractfile(
            f"{version}/16400/16500").read()).hexdigest()  # type: ignore[union-attr]
    for path in (dest / "base/16401/1259", target / version / "16401" / "16501"):
        assert path.read_bytes() == bytes(path.stat().st_size) and path.stat().st_size > 0
        assert path.stat().st_blocks == 0  # sparse: nothing was written but the size
    assert (dest / "global/pg_control").stat().st_size == 8192


# ------------------------------------------------------------------ a growing file

WRITER = """
import os, sys, time
with open(sys.argv[1], "wb") as f:
    for i in range(20):
        f.write(bytes([i]) * 100_000)
        f.flush()
        time.sleep(0.02)
with open(sys.argv[2], "wb") as f:
    f.write(b"next")
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(0.01)
"""

FAILING = """
import sys, time
f = open(sys.argv[1], "wb")
f.write(b"x" * 1000)
f.flush()
time.sleep(0.2)
sys.exit(3)
"""


# Closes and removes its file, then exits non-zero a moment later: as a failing
# pg_basebackup does (its atexit cleanup runs, and its files close, before its exit
# status can be read).
CLOSES_THEN_FAILS = """
import os, sys, time
with open(sys.argv[1], "wb") as f:
    f.write(b"x" * 1000)
    f.flush()
    time.sleep(0.2)
os.unlink(sys.argv[1])
time.sleep(0.5)
sys.exit(3)
"""


def test_a_file_being_written_is_read_to_its_end(tmp_path: Path) -> None:
    first, stop = tmp_path / "16384.tar", tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(first), str(tmp_path / "base.tar"),
                             str(stop)])
    try:
        while not first.exists():
            time.sleep(0.01)
        writer = Writer(proc, tmp_path, time.monotonic() + 60,
                        lambda code: CommandFailedError(f"exit {code}"))
        data = decompressed(GrowingFile(first, writer), first.name, "test").read()
        # Complete once the writer closed it, while the writer still runs.
        assert proc.poll() is None
        assert data == b"".join(bytes([i]) * 100_000 for i in range(20))
    finally:
        stop.touch()
        proc.wait()


def test_a_writer_that_fails_is_its_failure_not_a_short_file(tmp_path: Path) -> None:
    first = tmp_path / "16384.tar"
    proc = subprocess.Popen([sys.executable, "-c", FAILING, str(first)])
    while not first.exists():
        time.sleep(0.01)
    writer = Writer(proc, tmp_path, time.monotonic() + 60,
                    lambda code: CommandFailedError(f"writer exited {code}"))
    with pytest.raises(CommandFailedError, match="writer exited 3"):
        GrowingFile(first, writer).read()
    proc.wait()


def test_a_file_closed_by_a_dying_writer_is_its_failure_not_a_short_file(
        tmp_path: Path) -> None:
    first = tmp_path / "16384.tar"
    proc = subprocess.Popen([sys.executable, "-c", CLOSES_THEN_FAILS, str(first)])
    while not first.exists():
        time.sleep(0.01)
    raw = GrowingFile(first, Writer(proc, tmp_path, time.monotonic() + 60,
                                    lambda code: CommandFailedError(f"writer exited {code}")))
    with pytest.raises(CommandFailedError, match="writer exited 3"):
        raw.read()
    proc.wait()


def test_gzip_archives_are_read_whole_even_when_they_inflate_a_lot(tmp_path: Path) -> None:
    import gzip

    raw = bytes(50 * 1024 * 1024) + os.urandom(1000)  # zero pages compress a thousandfold
    path = tmp_path / "base.tar.gz"
    path.write_bytes(gzip.compress(raw, compresslevel=1))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    writer = Writer(proc, tmp_path, time.monotonic() + 60, lambda c: CommandFailedError("x"))
    assert decompressed(GrowingFile(path, writer), path.name, "test").read() == raw
    path.write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(CommandFailedError, match="gzip stream ends early"):
        decompressed(GrowingFile(path, writer), path.name, "test").read()
