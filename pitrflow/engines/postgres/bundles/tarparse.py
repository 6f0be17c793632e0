"""A minimal streaming reader of the tar archives PostgreSQL writes.

pg_basebackup's tar writer emits plain ustar members: regular files,
directories and symlinks, names under 100 bytes, sizes in octal (or base-256
above 8 GiB), then two zero blocks.  Nothing else is accepted: an archive
this reader cannot describe exactly is refused rather than guessed at.

Each member keeps its raw 512-byte header, so a writer can copy the archive
byte for byte into bundles that stay valid tar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from pitrflow.errors import CommandFailedError

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
_TYPES = {b"0": "file", b"\0": "file", b"5": "dir", b"2": "symlink"}


class TarFormatError(CommandFailedError):
    """The stream is not a tar archive as PostgreSQL writes them."""


@dataclass(frozen=True)
class TarMember:
    name: str  # without the trailing "/" of directories
    type: str  # "file" | "dir" | "symlink"
    size: int  # data bytes (0 for directories and symlinks)
    mode: int
    mtime: int  # seconds since the epoch
    link: str  # symlink target, "" otherwise
    header: bytes  # the raw header block(s), as they were in the stream

    @property
    def padding(self) -> int:
        """Zero bytes after the data, up to the next 512-byte block."""
        return padding_of(self.size)


def padding_of(size: int) -> int:
    return -size % BLOCK


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes, what: str, where: str) -> int:
    if field and field[0] & 0x80:
        # Base-256 (GNU/star): a big-endian two's complement with the top bit as flag.
        value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"{where}: tar header has a bad {what} field {field!r}",
                             "the stream is not a tar archive from pg_basebackup") from None


def _checksum_ok(block: bytes, where: str) -> bool:
    recorded = _number(block[148:156], "checksum", where)
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    return recorded == unsigned


def parse_header(block: bytes, where: str) -> TarMember | None:
    """One member from a 512-byte header; None for a zero block (the end of the archive)."""
    if len(block) != BLOCK:
        raise TarFormatError(f"{where}: the tar stream ends inside a header",
                             "pg_basebackup stopped early; see its log lines")
    if block == bytes(BLOCK):
        return None
    if not _checksum_ok(block, where):
        raise TarFormatError(f"{where}: a tar header fails its checksum",
                             "the stream is not a tar archive from pg_basebackup")
    kind = _TYPES.get(block[156:157])
    name = _text(block[0:100])
    if block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
        name = _text(block[345:500]) + "/" + name
    if kind is None:
        raise TarFormatError(
            f"{where}: tar member {name!r} has type {block[156:157]!r}, which PostgreSQL's "
            "tar writer never emits", "the stream is not a tar archive from pg_basebackup")
    size = _number(block[124:136], "size", where) if kind == "file" else 0
    return TarMember(
        name=normal_path(name, where), type=kind, size=size,
        mode=_number(block[100:108], "mode", where) & 0o7777,
        mtime=_number(block[136:148], "mtime", where),
        link=_text(block[157:257]) if kind == "symlink" else "",
        header=bytes(block),
    )


def normal_path(name: str, where: str) -> str:
    """'./pg_wal/archive_status/' -> 'pg_wal/archive_status'; nothing may leave the directory."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise TarFormatError(f"{where}: tar member name {name!r} points outside the data "
                             "directory", "the stream is not a tar archive from pg_basebackup")
    return "/".join(parts)


def read_exact(source: BinaryIO, buffer: memoryview, where: str) -> None:
    """Fill `buffer` from `source`, or fail naming where the stream ended."""
    done = 0
    while done < len(buffer):
        got = source.readinto(buffer[done:])  # type: ignore[attr-defined]
        if not got:
            raise TarFormatError(f"{where}: the tar stream ends {len(buffer) - done} bytes "
                                 "early", "pg_basebackup stopped early; see its log lines")
        done += got


def next_member(source: BinaryIO, where: str) -> TarMember | None:
    """The next member's header; None after the end-of-archive blocks."""
    block = bytearray(BLOCK)
    read_exact(source, memoryview(block), where)
    member = parse_header(bytes(block), where)
    if member is None:
        read_exact(source, memoryview(block), where)  # the second zero block
        if block != bytes(BLOCK):
            raise TarFormatError(f"{where}: data after a zero block in the tar stream",
                                 "the stream is not a tar archive from pg_basebackup")
    return member
