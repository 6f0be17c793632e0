"""A streaming S3 download that survives dropped connections.

boto3 retries a request until its response starts; a connection cut while
the body streams (a multi-GB base backup) surfaces mid-read.  This reader
then asks again for the rest only (`Range: bytes=<pos>-`), pinned to the
same object version by its ETag (`If-Match`), so a restore resumes instead of
starting over and can never splice two versions of an object.  Callers still
check the SHA-256 of what they read (HashingReader).
"""

from __future__ import annotations

import io
import logging
from typing import Any

from pitrflow.errors import RepositoryError
from pitrflow.storage.s3_client import S3Bucket
from pitrflow.storage.s3_errors import error_code, translate

log = logging.getLogger("pitrflow.storage.s3")

READ_CHUNK = 4 * 1024 * 1024


class S3Reader(io.RawIOBase):
    def __init__(self, bucket: S3Bucket, key: str, max_resumes: int) -> None:
        super().__init__()
        self._bucket = bucket
        self._key = key
        self._max_resumes = max_resumes
        self._resumes = 0
        self._pos = 0
        response = bucket.call("download", key, "get_object", Key=bucket.full_key(key))
        self._etag: str = response.get("ETag", "")
        self._length: int = int(response["ContentLength"])
        self._body: Any = response["Body"]

    @property
    def resumes(self) -> int:
        return self._resumes

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        while True:
            if self._pos >= self._length or size == 0:
                return b""
            try:
                data = self._body.read(size)
            except Exception as exc:  # noqa: BLE001 - the stream broke; resume below
                self._resume(exc)
                continue
            if not data:
                # The body ended before Content-Length: a silent cut.
                self._resume(None)
                continue
            self._pos += len(data)
            return bytes(data)

    def readall(self) -> bytes:
        chunks: list[bytes] = []
        while chunk := self.read(READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _resume(self, cause: BaseException | None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._resumes += 1
        what = f"{type(cause).__name__}" if cause is not None else "the body ended early"
        if self._resumes > self._max_resumes:
            raise RepositoryError(
                f"the download of {self._key} from {self._bucket.place.endpoint} broke "
                f"{self._resumes} times (last: {what}) at byte {self._pos} of {self._length}",
                "the network or the endpoint is unstable; run again")
        log.warning("download of %s broke at byte %d of %d (%s); resuming",
                    self._key, self._pos, self._length, what)
        self._close_body()
        try:
            response = self._bucket.client.get_object(
                Bucket=self._bucket.settings.bucket, Key=self._bucket.full_key(self._key),
                Range=f"bytes={self._pos}-", IfMatch=self._etag)
        except (BotoCoreError, ClientError) as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                raise RepositoryError(
                    f"object {self._key} was replaced while it was being read",
                    "something else writes this repository; find it, then run again"
                ) from None
            self._body = _EmptyBody()
            if self._resumes >= self._max_resumes:
                raise translate(exc, self._bucket.place, "download", self._key) from None
            return
        self._body = response["Body"]

    def _close_body(self) -> None:
        try:
            self._body.close()
        except Exception:  # noqa: BLE001, S110 - a broken stream may fail to close too
            pass

    def close(self) -> None:
        if not self.closed:
            self._close_body()
        super().close()


class _EmptyBody:
    """Stands in for a body after a failed resume, so the next read resumes again."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass
