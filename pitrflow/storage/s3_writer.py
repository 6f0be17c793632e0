"""An atomic S3 writer: a multipart upload streamed with bounded memory.

Bytes are hashed (SHA-256 for the manifest, MD5 per part for S3 to check)
as they arrive and cut into parts sized by s3_parts.  A small pool uploads
parts while the next one fills; a semaphore bounds the parts in flight, so at
most `workers + 1` parts exist at once, whatever the object's size.  Parts
above 16 MiB (after the first 24 GiB of a stream) spill to an anonymous
temporary file instead of memory, so the process stays within its memory
budget (300 MB RSS) at any size; the disk used is a few parts, never the object.

Nothing is visible until commit() completes the upload; abort() (or any
failure) aborts it so S3 drops the parts.  A dropped connection costs one
part's retry, never the whole upload: boto3 retries each request, and the
upload itself carries on from the parts already stored.  Objects that end
below 8 MiB go up in one PutObject instead.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pitrflow.errors import RepositoryError
from pitrflow.storage.base import ObjectInfo
from pitrflow.storage.s3_client import S3Bucket
from pitrflow.storage.s3_errors import error_code, translate
from pitrflow.storage.s3_lock import ensure_retention, lock_args
from pitrflow.storage.s3_parts import MAX_PARTS, SINGLE_PUT_LIMIT, PartSizer

log = logging.getLogger("pitrflow.storage.s3")

MEMORY_PART_LIMIT = 16 * 1024 * 1024
DEFAULT_WORKERS = 2
SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
SHA256_TAG = "sha256"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class _Part:
    """One part being filled: in memory up to MEMORY_PART_LIMIT, else in a temporary file."""

    def __init__(self, number: int, spill_dir: Path | None) -> None:
        self.number = number
        self.body = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed after upload
            max_size=MEMORY_PART_LIMIT, dir=spill_dir)
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.length = 0

    def write(self, data: memoryview) -> None:
        self.body.write(data)
        self.md5.update(data)
        self.length += len(data)

    def close(self) -> None:
        self.body.close()


class S3Writer:
    """A new object; invisible until commit(). Not thread-safe: one producer writes."""

    def __init__(self, bucket: S3Bucket, key: str, *, expected_size: int | None = None,
                 known_sha256: str | None = None, workers: int = DEFAULT_WORKERS,
                 spill_dir: Path | None = None, lock: bool = True) -> None:
        self._bucket = bucket
        self._key = key
        self._full_key = bucket.full_key(key)
        self._sizer = PartSizer(expected_size)
        self._known_sha256 = known_sha256
        self._workers = max(1, workers)
        self._spill_dir = spill_dir
        self._digest = hashlib.sha256()
        self._size = 0
        self._part = _Part(1, spill_dir)
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(self._workers)
        self._futures: list[Future[dict[str, Any]]] = []
        self._shipped: list[_Part] = []
        self._part_md5s: dict[int, bytes] = {}
        self._failure: BaseException | None = None
        self._closed = False
        # Fixed when the writer opens: every part of one object gets the same lock.
        self._lock = lock_args(bucket) if lock else {}

    # --- writing ---

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise RepositoryError(f"writer for {self._key} is already closed",
                                  "this is a bug in pitrflow; please report it")
        self._raise_failure()
        view = memoryview(data).cast("B")
        self._digest.update(view)
        self._size += len(view)
        while view:
            room = self._sizer.size_of(self._part.number) - self._part.length
            self._part.write(view[:room])
            view = view[room:]
            if self._part.length >= self._sizer.size_of(self._part.number):
                self._ship(self._part)
                self._part = _Part(self._part.number + 1, self._spill_dir)
        return len(data)

    def _ship(self, part: _Part) -> None:
        """Hand a full part to the pool; blocks while `workers` parts are in flight."""
        if part.number > MAX_PARTS:
            raise RepositoryError(
                f"object {self._key} needs more than {MAX_PARTS} parts",
                "it is larger than S3 allows for one object (5 TiB); split the backup")
        if self._upload_id is None:
            self._start_upload()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers,
                                            thread_name_prefix="pitrflow-s3-part")
        self._slots.acquire()
        self._raise_failure(release=True)
        self._part_md5s[part.number] = part.md5.digest()
        self._shipped.append(part)
        future = self._pool.submit(self._upload_part, part)
        future.add_done_callback(self._part_done)
        self._futures.append(future)

    def _part_done(self, future: Future[dict[str, Any]]) -> None:
        if not future.cancelled():
            exc = future.exception()
            if exc is not None and self._failure is None:
                self._failure = exc
        self._slots.release()

    def _raise_failure(self, release: bool = False) -> None:
        if self._failure is not None:
            if release:
                self._slots.release()
            raise self._failure

    def _start_upload(self) -> None:
        extra: dict[str, Any] = dict(self._bucket.settings.put_args())
        extra.update(self._lock)
        if self._known_sha256:
            extra["Metadata"] = {SHA256_METADATA: self._known_sha256}
        response = self._bucket.call("starting the upload", self._key,
                                     "create_multipart_upload", Key=self._full_key, **extra)
        self._upload_id = str(response["UploadId"])

    def _upload_part(self, part: _Part) -> dict[str, Any]:
        try:
            part.body.seek(0)
            response = self._bucket.call(
                f"upload of part {part.number}", self._key, "upload_part",
                Key=self._full_key, UploadId=self._upload_id, PartNumber=part.number,
                Body=part.body, ContentLength=part.length, ContentMD5=_b64(part.md5.digest()))
            return {"PartNumber": part.number, "ETag": response["ETag"]}
        finally:
            part.close()

    # --- finishing ---

    def commit(self) -> ObjectInfo:
        if self._closed:
            raise RepositoryError(f"writer for {self._key} is already closed",
                                  "this is a bug in pitrflow; please report it")
        sha256 = self._digest.hexdigest()
        if self._known_sha256 and self._known_sha256 != sha256:
            self.abort()
            raise RepositoryError(f"{self._key} changed while it was uploaded",
                                  "run again once nothing else writes the source file")
        try:
            if self._upload_id is None and self._size < SINGLE_PUT_LIMIT:
                self._put_single(sha256)
            else:
                self._complete(sha256)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return ObjectInfo(self._key, self._size, sha256)

    def _put_single(self, sha256: str) -> None:
        part = self._part
        try:
            part.body.seek(0)
            self._bucket.call("upload", self._key, "put_object", Key=self._full_key,
                              Body=part.body, ContentLength=part.length,
                              ContentMD5=_b64(part.md5.digest()),
                              Metadata={SHA256_METADATA: sha256},
                              **self._bucket.settings.put_args(), **self._lock)
        finally:
            part.close()

    def _complete(self, sha256: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._part.length > 0 or not self._futures:
            self._ship(self._part)
        else:
            self._part.close()
        parts = [future.result() for future in self._futures]
        self._raise_failure()
        try:
            self._bucket.client.complete_multipart_upload(
                Bucket=self._bucket.settings.bucket, Key=self._full_key,
                UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        except (BotoCoreError, ClientError) as exc:
            # A retried request whose first attempt succeeded finds the upload gone.
            if error_code(exc) != "NoSuchUpload" or not self._completed_already(len(parts)):
                raise translate(exc, self._bucket.place, "completing the upload",
                                self._key) from None
        self._shutdown_pool()
        if self._lock:
            ensure_retention(self._bucket, self._key, self._lock["ObjectLockRetainUntilDate"])
        if not self._known_sha256:
            self._tag(sha256)

    def _completed_already(self, parts: int) -> bool:
        """After a retried CompleteMultipartUpload: is the object there with our ETag?"""
        joined = b"".join(self._part_md5s[n] for n in sorted(self._part_md5s))
        expected = f'"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{parts}"'
        try:
            head = self._bucket.client.head_object(Bucket=self._bucket.settings.bucket,
                                                   Key=self._full_key)
        except Exception:  # noqa: BLE001 - then it was not completed
            return False
        return head.get("ETag") == expected and head.get("ContentLength") == self._size

    def _tag(self, sha256: str) -> None:
        """Record the SHA-256 on the object (metadata is fixed before the bytes are known)."""
        try:
            self._bucket.client.put_object_tagging(
                Bucket=self._bucket.settings.bucket, Key=self._full_key,
                Tagging={"TagSet": [{"Key": SHA256_TAG, "Value": sha256}]})
        except Exception as exc:  # noqa: BLE001 - the manifest is the record; this is a spare
            log.warning("could not tag %s with its sha256 (%s); the manifest still records it",
                        self._key, error_code(exc) or type(exc).__name__)

    def abort(self) -> None:
        """Drop the upload and every part of it; quiet, since it runs while failing."""
        if self._closed:
            return
        self._closed = True
        for future in self._futures:
            future.cancel()
        self._shutdown_pool()
        for part in [*self._shipped, self._part]:
            part.close()
        if self._upload_id is None:
            return
        try:
            self._bucket.client.abort_multipart_upload(
                Bucket=self._bucket.settings.bucket, Key=self._full_key,
                UploadId=self._upload_id)
        except Exception as exc:  # noqa: BLE001 - cleanup must not mask the real error
            log.warning("could not abort the upload of %s (upload id %s): %s; "
                        "pitr repo cleanup removes it later", self._key, self._upload_id, exc)

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> S3Writer:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()
