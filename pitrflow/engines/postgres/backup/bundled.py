"""Layout v2: pg_basebackup's tar on stdout, cut into bundles and frames by the worker.

pg_basebackup sends one uncompressed tar (`-D - -Ft --wal-method=fetch`, so
the WAL needed for consistency is inside it); bundles.writer compresses it
on `process_max` threads straight into the repository, with no local copy.
Every file's size and CRC32C are then held against the server's
backup_manifest; the manifest, the file index and every object land in the
repository before the caller writes our manifest, last.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from typing import BinaryIO

from pitrflow import procs
from pitrflow.engines.postgres import commands
from pitrflow.engines.postgres.backup.pgmanifest import parse_pg_manifest
from pitrflow.engines.postgres.backup.produce import Produced, Run
from pitrflow.engines.postgres.bundles.crosscheck import check_against_pg_manifest
from pitrflow.engines.postgres.bundles.index import INDEX_NAME, dump_index
from pitrflow.engines.postgres.bundles.tarparse import TarFormatError
from pitrflow.engines.postgres.bundles.writer import PG_MANIFEST, write_bundles
from pitrflow.engines.postgres.catalog.manifest import LAYOUT_BUNDLES, FileEntry
from pitrflow.engines.postgres.connection import libpq_args
from pitrflow.errors import CommandFailedError
from pitrflow.progress import Progress
from pitrflow.storage.base import MIB
from pitrflow.storage.layout import backup_object, backup_prefix

log = logging.getLogger("pitrflow.backup")

_F_SETPIPE_SZ = 1031
_PIPE_BYTES = 1024 * 1024


def _widen_pipe(stream: BinaryIO) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer wake-ups between pg_basebackup and us."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)


def produce_bundled(run: Run) -> Produced:
    instance, repo = run.instance, run.repo
    settings = repo.transfer
    level = instance.compress_level if instance.compress != "none" else 1
    argv = commands.basebackup_argv(run.bins, libpq_args(instance), None, label=run.label,
                                    compress=[], incremental_manifest=run.parent_manifest_file,
                                    max_rate=instance.max_rate, manifest_checksums="CRC32C")
    log.info("backup %s of %s: %s", run.backup_id, instance.name, " ".join(argv[1:]))
    deadline = time.monotonic() + instance.backup_timeout_seconds
    progress = Progress(f"backup of {instance.name}", run.size_estimate)
    with procs.spawn(argv, env=run.env, secrets=run.secrets, name="pg_basebackup") as (
            proc, tail):
        assert proc.stdout is not None
        _widen_pipe(proc.stdout)
        try:
            written = write_bundles(proc.stdout, repo, backup_prefix(instance.name, run.backup_id),
                                    settings, level, run.published, progress)
        except TarFormatError:
            # A stream cut short is pg_basebackup's failure: its own words say why.
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            if code != 0:
                raise _failed(list(tail), code) from None
            raise
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        if code != 0:
            raise _failed(list(tail), code)
    checked = check_against_pg_manifest(written.index, written.pg_manifest, run.backup_id)
    progress.finish()
    pg_key = backup_object(instance.name, run.backup_id, PG_MANIFEST)
    run.published.append(pg_key)
    pg_info = repo.put_bytes(pg_key, written.pg_manifest)
    index_key = backup_object(instance.name, run.backup_id, INDEX_NAME)
    run.published.append(index_key)
    index_info = repo.put_bytes(index_key, dump_index(written.index))
    assert pg_info.sha256 is not None and index_info.sha256 is not None
    files = [FileEntry(PG_MANIFEST, pg_info.size, pg_info.sha256),
             FileEntry(INDEX_NAME, index_info.size, index_info.sha256)]
    files += [FileEntry(o.name, o.size, o.sha256) for o in written.index.objects]
    log.info("backup %s: %d files in %d objects, %d of them checked against the server's "
             "backup_manifest", run.backup_id, len(written.index.entries),
             len(written.index.objects), checked)
    compression = (f"worker-zstd:level={level},threads={settings.process_max},"
                   f"frames={settings.frame_size // MIB}MiB,"
                   f"bundles={settings.bundle_size // MIB}MiB")
    return Produced(files, parse_pg_manifest(written.pg_manifest, pg_key), compression,
                    LAYOUT_BUNDLES, index=INDEX_NAME)


def _failed(tail: list[str], code: int) -> CommandFailedError:
    return CommandFailedError(f"pg_basebackup failed: {procs.most_telling_line(tail) or code}",
                              "see the log for its full output")
