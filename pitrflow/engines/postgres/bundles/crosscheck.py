"""Hold the bytes received against the server's own backup_manifest.

pg_basebackup's manifest lists every file the server sent with its size and
CRC32C.  The writer computed both again from the bytes it actually stored,
so a file damaged or cut short anywhere between the server's disk and the
repository fails the backup here, by name, before any manifest of ours says
the backup exists.
"""

from __future__ import annotations

import json

from pitrflow.engines.postgres.bundles.index import FileIndex
from pitrflow.errors import CommandFailedError


def _path(item: dict[str, object]) -> str:
    if "Path" in item:
        return str(item["Path"])
    # Names that are not valid UTF-8 are hex-encoded by PostgreSQL.
    return bytes.fromhex(str(item["Encoded-Path"])).decode("utf-8", "surrogateescape")


def check_against_pg_manifest(index: FileIndex, pg_manifest: bytes, backup: str) -> int:
    """Raise naming the first file whose size or CRC32C differs; returns files checked."""
    try:
        files = json.loads(pg_manifest)["Files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandFailedError(f"backup_manifest of {backup} cannot be read: {exc}",
                                 "is pg_basebackup 13 or newer?") from None
    checked = 0
    for item in files:
        path = _path(item)
        entry = index.entry(path)
        if entry is None or entry.type != "file":
            raise CommandFailedError(
                f"file {path} is in the server's backup_manifest but not in the stream received",
                "the backup stream was cut or altered on the way; take the backup again")
        if int(item["Size"]) != entry.size:
            raise CommandFailedError(
                f"file {path} has {entry.size} bytes in the stream received, the server's "
                f"backup_manifest says {item['Size']}",
                "the backup stream was cut or altered on the way; take the backup again")
        algorithm = str(item.get("Checksum-Algorithm", "NONE")).upper()
        if algorithm == "CRC32C" and str(item["Checksum"]).lower() != entry.checksum:
            raise CommandFailedError(
                f"file {path} has CRC32C {entry.checksum} in the stream received, the server's "
                f"backup_manifest says {item['Checksum']}",
                "the backup stream was damaged on the way; take the backup again")
        checked += 1
    return checked
