"""S3 repository driver (AWS S3 or any S3-compatible store), selected by url = "s3://...".

The same contract as the filesystem driver, on an object store:
- atomic writes: a multipart upload is invisible until completed, and a
  single PutObject is all or nothing (s3_writer);
- streaming both ways with bounded memory, so a backup needs no local disk
  in proportion to the database (`features.local_staging` is False, and the
  base backup streams into `open_writer`);
- downloads that resume after a dropped connection (s3_reader);
- listings paginated, since an instance keeps thousands of WAL segments;
- every failure one line naming the bucket, key or endpoint (s3_errors).
The SHA-256 of each object goes into its metadata (x-amz-meta-sha256) when it
is known before the upload starts, otherwise into an object tag, as a spare
for `pitr verify`; the manifest stays the record a restore trusts.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from pitrflow.config import RepositoryConfig
from pitrflow.errors import ObjectLockedError, RepositoryError
from pitrflow.storage import s3_lock
from pitrflow.storage.base import (
    CHUNK,
    ObjectInfo,
    StorageFeatures,
    TransferSettings,
    sha256_file,
    whole_range,
)
from pitrflow.storage.locking import LockStatus
from pitrflow.storage.s3_client import S3Bucket, S3Settings, settings_from_config
from pitrflow.storage.s3_errors import error_code
from pitrflow.storage.s3_parts import SINGLE_PUT_LIMIT
from pitrflow.storage.s3_reader import S3Reader
from pitrflow.storage.s3_writer import DEFAULT_WORKERS, SHA256_METADATA, SHA256_TAG, S3Writer
from pitrflow.storage.uploads import PendingUpload

LIST_PAGE_SIZE = 1000
PROBE_PREFIX = ".probe-"


def check_key(key: str, *, prefix: bool = False) -> str:
    """Refuse keys that could escape the repository's prefix (same rules as the fs driver)."""
    if (not key and not prefix) or key.startswith("/") or ".." in key.split("/"):
        raise RepositoryError(f"invalid object key {key!r}", "keys are relative paths")
    return key


class S3Repository:
    features = StorageFeatures(local_staging=False, local_paths=False, multipart_uploads=True)

    def __init__(self, settings: S3Settings, *, workers: int = DEFAULT_WORKERS,
                 list_page_size: int = LIST_PAGE_SIZE,
                 transfer: TransferSettings | None = None) -> None:
        self.settings = settings
        self.transfer = transfer or TransferSettings()
        self.bucket = S3Bucket(settings)
        if settings.lock_mode is not None:
            self.features = replace(self.features, object_lock=True)
        self._workers = workers
        self._page_size = list_page_size

    @classmethod
    def from_config(cls, config: RepositoryConfig) -> S3Repository:
        return cls(settings_from_config(config), transfer=config.transfer)

    def describe(self) -> str:
        return self.bucket.place.url()

    # --- writing ---

    def open_writer(self, key: str, expected_size: int | None = None) -> S3Writer:
        return S3Writer(self.bucket, check_key(key), expected_size=expected_size,
                        workers=self._workers)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        with self.open_writer(key, expected_size=len(data)) as writer:
            writer.write(data)
            return writer.commit()

    def put_file(self, key: str, src: Path, move: bool = False) -> ObjectInfo:
        check_key(key)
        size = src.stat().st_size
        # A file's checksum can be known before the upload, so it goes into the
        # object's metadata even when the upload is multipart.
        known = sha256_file(src)[0] if size >= SINGLE_PUT_LIMIT else None
        writer = S3Writer(self.bucket, key, expected_size=size, known_sha256=known,
                          workers=self._workers)
        with open(src, "rb") as handle, writer:
            while chunk := handle.read(CHUNK):
                writer.write(chunk)
            info = writer.commit()
        if move:
            src.unlink()
        return info

    # --- reading ---

    def open_reader(self, key: str) -> BinaryIO:
        raw = S3Reader(self.bucket, check_key(key), max_resumes=self.settings.max_attempts)
        return cast(BinaryIO, raw)

    def get_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as handle:
            return handle.read()

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """One ranged GET; a body cut mid-read is asked for again, whole."""
        return whole_range(key, offset, length, self.read_upto(key, offset, length))

    def read_upto(self, key: str, offset: int, length: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        if length <= 0:
            return b""
        check_key(key)
        data = b""
        for _ in range(max(1, self.settings.max_attempts)):
            try:
                response = self.bucket.client.get_object(
                    Bucket=self.settings.bucket, Key=self.bucket.full_key(key),
                    Range=f"bytes={offset}-{offset + length - 1}")
            except ClientError as exc:
                if error_code(exc) in ("InvalidRange", "416"):
                    return b""  # the object ends before `offset`
                raise self._translate(exc, "download", key) from None
            except BotoCoreError as exc:
                raise self._translate(exc, "download", key) from None
            try:
                data = response["Body"].read()
            except Exception:  # noqa: BLE001 - the body broke mid-read: ask again
                continue
            if len(data) >= length or int(response.get("ContentLength", 0)) == len(data):
                break  # whole, or the object really is shorter: no retry changes that
        return bytes(data)

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def head(self, key: str) -> dict[str, object] | None:
        """The object's HEAD response, None when it does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = self.bucket.full_key(check_key(key))
        try:
            return cast(dict[str, object], self.bucket.client.head_object(
                Bucket=self.settings.bucket, Key=full))
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                self._check_bucket()  # a missing bucket must not read as a missing object
                return None
            raise self._translate(exc, "lookup", key) from None
        except BotoCoreError as exc:
            raise self._translate(exc, "lookup", key) from None

    def recorded_sha256(self, key: str) -> str | None:
        """The SHA-256 stored with the object (metadata, else tag), for pitr verify."""
        head = self.head(key)
        if head is None:
            return None
        metadata = cast(dict[str, str], head.get("Metadata") or {})
        if SHA256_METADATA in metadata:
            return metadata[SHA256_METADATA]
        tags = self.bucket.call("reading tags", key, "get_object_tagging",
                                Key=self.bucket.full_key(key))
        return next((t["Value"] for t in tags.get("TagSet", []) if t["Key"] == SHA256_TAG),
                    None)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix` (a folder or any leading string), sorted.

        S3 returns keys in UTF-8 byte order, which is code point order: the
        same order as sorted() on the filesystem driver's keys.
        """
        check_key(prefix, prefix=True)
        strip = len(self.settings.prefix)

        def pages() -> Iterator[dict[str, object]]:
            paginator = self.bucket.client.get_paginator("list_objects_v2")
            yield from paginator.paginate(Bucket=self.settings.bucket,
                                          Prefix=self.bucket.full_key(prefix),
                                          PaginationConfig={"PageSize": self._page_size})

        for page in _guarded_iter(self, "listing", prefix or None, pages()):
            for item in cast(list[dict[str, Any]], page.get("Contents", [])):
                yield ObjectInfo(str(item["Key"])[strip:], int(item["Size"]),
                                 modified=item.get("LastModified"))

    def delete(self, key: str) -> None:
        if self.features.object_lock:
            s3_lock.delete_versions(self.bucket, check_key(key))
            return
        self.bucket.call("delete", key, "delete_object", Key=self.bucket.full_key(check_key(key)))

    # --- Object Lock (features.object_lock; see storage.locking) ---

    def retained_until(self, key: str) -> datetime | None:
        return self.bucket.guarded("lookup", key, lambda: s3_lock.retained_until(
            self.bucket, check_key(key)))

    def extend_lock(self, key: str) -> None:
        s3_lock.extend(self.bucket, check_key(key))

    def lock_status(self) -> LockStatus:
        return s3_lock.lock_status(self.bucket)

    # --- interrupted uploads (features.multipart_uploads) ---

    def list_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        check_key(prefix, prefix=True)
        strip = len(self.settings.prefix)

        def pages() -> Iterator[dict[str, object]]:
            paginator = self.bucket.client.get_paginator("list_multipart_uploads")
            yield from paginator.paginate(Bucket=self.settings.bucket,
                                          Prefix=self.bucket.full_key(prefix))

        for page in _guarded_iter(self, "listing uploads", prefix or None, pages()):
            for item in cast(list[dict[str, Any]], page.get("Uploads", [])):
                yield PendingUpload(str(item["Key"])[strip:], str(item["UploadId"]),
                                    item["Initiated"])

    def abort_upload(self, upload: PendingUpload) -> None:
        from botocore.exceptions import ClientError

        try:
            self.bucket.client.abort_multipart_upload(
                Bucket=self.settings.bucket, Key=self.bucket.full_key(check_key(upload.key)),
                UploadId=upload.upload_id)
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":  # already gone: what we wanted
                raise self._translate(exc, "aborting an upload", upload.key) from None

    # --- local scratch and checks ---

    def staging_dir(self) -> Path:
        """A local scratch directory, for small files only: nothing here is renamed in."""
        return Path(tempfile.mkdtemp(prefix="pitrflow-s3-staging-"))

    def discard_staging(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def check_writable(self) -> None:
        self._check_bucket()
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        # Unlocked, so the probe can go at once even in a locked repository.
        with S3Writer(self.bucket, probe, expected_size=2, lock=False) as writer:
            writer.write(b"ok")
            writer.commit()
        try:
            self.delete(probe)
        except RepositoryError as exc:  # a bucket default retention locked it anyway
            if not isinstance(exc, ObjectLockedError):
                raise

    def _check_bucket(self) -> None:
        self.bucket.call("checking the bucket", None, "head_bucket", bucket_call=True)

    def _translate(self, exc: BaseException, action: str, key: str | None) -> RepositoryError:
        from pitrflow.storage.s3_errors import translate

        return translate(exc, self.bucket.place, action, key)


def _guarded_iter(repo: S3Repository, action: str, key: str | None,
                  pages: Iterator[dict[str, object]]) -> Iterator[dict[str, object]]:
    """Iterate over pages, turning a failure on any page into a one-line error."""
    from botocore.exceptions import BotoCoreError, ClientError

    while True:
        try:
            page = next(pages)
        except StopIteration:
            return
        except (BotoCoreError, ClientError) as exc:
            raise repo._translate(exc, action, key) from None
        yield page
