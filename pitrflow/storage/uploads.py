"""Optional repository operations for stores with resumable (multipart) uploads.

An object store keeps the parts of an upload that was neither completed nor
aborted (a worker killed mid-backup) and bills for them, invisibly to any
listing.  Drivers that have such uploads declare `features.multipart_uploads`
and implement these two operations, so orphan cleanup can find and abort them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pitrflow.storage.base import Repository


@dataclass(frozen=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: datetime


class MultipartRepository(Repository, Protocol):
    def list_uploads(self, prefix: str) -> Iterator[PendingUpload]: ...

    def abort_upload(self, upload: PendingUpload) -> None: ...
