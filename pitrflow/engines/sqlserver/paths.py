"""Paths as the SQL Server sees them, which need not be paths the worker understands.

The server may run on Windows (``D:\\Backups``, ``\\\\nas\\share``) while the worker is
Linux, so a server path is built with the path flavour of the directory it starts
from, never with ``os.path``.  File names derived from a database name are cleaned
of characters either flavour refuses.
"""

from __future__ import annotations

import re
from pathlib import PurePath, PurePosixPath, PureWindowsPath

_WINDOWS = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")  # two letters at least: not C://
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


def is_windows_path(path: str) -> bool:
    """``C:\\...``, ``C:/...`` or a UNC share ``\\\\server\\share``."""
    return bool(_WINDOWS.match(path))


def server_path(path: str) -> PurePath:
    return PureWindowsPath(path) if is_windows_path(path) else PurePosixPath(path)


def is_url(path: str) -> bool:
    """``s3://...`` (BACKUP TO URL, SQL Server 2022+) rather than a directory or share."""
    return bool(_URL.match(path))


def server_join(base: str, *parts: str) -> str:
    """``base`` joined with ``parts`` in the server's own path flavour (``/`` for URLs)."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts if part)])
    return str(server_path(base).joinpath(*parts))


def server_dirname(path: str) -> str:
    return str(server_path(path).parent)


def safe_file_stem(name: str) -> str:
    """A database name usable as a file name on Windows and Linux servers alike."""
    stem = _UNSAFE.sub("_", name).strip(" .")
    return stem or "restored"
