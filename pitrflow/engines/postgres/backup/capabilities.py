"""What an instance's server can do for a backup, probed once and remembered.

`compress = "server"` asks the server to compress with zstd; a server built
without zstd refuses at once.  Trying, failing and falling back on every
backup would put a false alarm in every backup's log, so the first refusal is
recorded in the repository beside the instance's history, and later backups
take the worker's path directly, saying so in one line.  A new major version
of the server is probed again.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pitrflow.catalog.records import dump_record, load_record
from pitrflow.errors import RepositoryError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import capabilities_key


def known_without_server_zstd(repo: Repository, instance: str, server_major: int) -> str | None:
    """When this major version of the instance's server was found unable to compress with
    zstd (an ISO time), or None when that is not known."""
    key = capabilities_key(instance)
    try:
        doc = load_record("capabilities", repo.get_bytes(key), key)
    except RepositoryError:
        return None
    if doc.get("server_major") != server_major or doc.get("server_zstd", True):
        return None
    return str(doc.get("probed_at", "earlier"))


def remember_without_server_zstd(repo: Repository, instance: str, server_major: int) -> None:
    repo.put_bytes(capabilities_key(instance), dump_record("capabilities", {
        "instance": instance, "server_major": server_major, "server_zstd": False,
        "probed_at": datetime.now(UTC).isoformat(timespec="seconds")}))
