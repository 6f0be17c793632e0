"""What every way of producing a base backup is given, and what it hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres.backup.pgmanifest import PgManifestFacts
from pitrflow.engines.postgres.binaries import PgBinaries
from pitrflow.engines.postgres.catalog.manifest import FileEntry
from pitrflow.storage.base import Repository


@dataclass
class Run:
    instance: InstanceConfig
    repo: Repository
    bins: PgBinaries
    server_major: int
    backup_id: str
    label: str
    env: dict[str, str]
    secrets: list[str]
    # Keys stored so far: deleted if the backup fails before its manifest is written.
    published: list[str]
    parent_manifest_file: Path | None
    size_estimate: int = 0


@dataclass
class Produced:
    files: list[FileEntry]
    pg_facts: PgManifestFacts
    compression: str
    layout: str
    index: str | None = None
    notes: list[str] = field(default_factory=list)
