"""S3 Object Lock for the S3 driver: retention on write, versioned deletes, lock checks.

With `object_lock = { mode, days }`, every object is written with ObjectLockMode and
ObjectLockRetainUntilDate = now + days (PutObject, and CreateMultipartUpload; S3
wants a checksum on such writes, and every PutObject and UploadPart here carries
Content-MD5).  After a multipart upload the retention is read back and set with
PutObjectRetention if the store did not apply it (some S3-compatible stores ignore
lock headers on CreateMultipartUpload).

A bucket with Object Lock is versioned, and a plain DeleteObject there only adds a
delete marker: the data stays, billed, and a "deleted" backup is merely hidden.  So
a delete removes each version by id; inside the lock S3 refuses, and the refusal
becomes ObjectLockedError with the date the lock lapses (expire then reports what it
will delete and finishes on a later run).  GOVERNANCE locks are never bypassed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pitrflow.errors import ObjectLockedError
from pitrflow.storage.locking import LockStatus
from pitrflow.storage.s3_client import S3Bucket
from pitrflow.storage.s3_errors import DENIED_CODES, error_code

log = logging.getLogger("pitrflow.storage.s3")


def retain_until(bucket: S3Bucket, now: datetime | None = None) -> datetime:
    settings = bucket.settings
    assert settings.lock_period is not None
    return (now or datetime.now(UTC)) + settings.lock_period


def lock_args(bucket: S3Bucket) -> dict[str, Any]:
    """Arguments that lock a new object (empty without object_lock)."""
    settings = bucket.settings
    if settings.lock_mode is None:
        return {}
    return {"ObjectLockMode": settings.lock_mode,
            "ObjectLockRetainUntilDate": retain_until(bucket)}


def _set_retention(bucket: S3Bucket, key: str, until: datetime,
                   version_id: str | None = None) -> None:
    kwargs: dict[str, Any] = {"Key": bucket.full_key(key),
                              "Retention": {"Mode": bucket.settings.lock_mode,
                                            "RetainUntilDate": until}}
    if version_id:
        kwargs["VersionId"] = version_id
    bucket.call("setting the retention", key, "put_object_retention", **kwargs)


def ensure_retention(bucket: S3Bucket, key: str, until: datetime) -> None:
    """After a multipart upload: make sure the new version carries its retention."""
    head = bucket.call("lookup", key, "head_object", Key=bucket.full_key(key))
    current = head.get("ObjectLockRetainUntilDate")
    if current is None or current < until - timedelta(seconds=1):
        _set_retention(bucket, key, until, head.get("VersionId"))


def extend(bucket: S3Bucket, key: str) -> None:
    """Lock `key` at least until an object written now would be (never shortens)."""
    until = retain_until(bucket)
    head = bucket.call("lookup", key, "head_object", Key=bucket.full_key(key))
    current = head.get("ObjectLockRetainUntilDate")
    if current is None or current < until - timedelta(minutes=1):
        _set_retention(bucket, key, until, head.get("VersionId"))


def retained_until(bucket: S3Bucket, key: str, version_id: str | None = None,
                   ) -> datetime | None:
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": bucket.settings.bucket, "Key": bucket.full_key(key)}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        head = bucket.client.head_object(**kwargs)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound", "405", "MethodNotAllowed"):
            return None  # gone, or a delete marker
        raise
    until = head.get("ObjectLockRetainUntilDate")
    return until if isinstance(until, datetime) else None


def delete_versions(bucket: S3Bucket, key: str) -> None:
    """Remove every version (and delete marker) of `key`; ObjectLockedError inside the lock."""
    full = bucket.full_key(key)
    versions: list[str] = []
    paginator = bucket.client.get_paginator("list_object_versions")
    pages = bucket.guarded("listing versions", key, lambda: list(
        paginator.paginate(Bucket=bucket.settings.bucket, Prefix=full)))
    for page in pages:
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            if item["Key"] == full:
                versions.append(str(item["VersionId"]))
    for version in versions:
        _delete_version(bucket, key, version)


def _delete_version(bucket: S3Bucket, key: str, version: str) -> None:
    from botocore.exceptions import ClientError

    try:
        bucket.client.delete_object(Bucket=bucket.settings.bucket, Key=bucket.full_key(key),
                                    VersionId=version)
    except ClientError as exc:
        if error_code(exc) not in DENIED_CODES:
            raise bucket_error(bucket, exc, "delete", key) from None
        until = retained_until(bucket, key, version)
        if until is None or until <= datetime.now(UTC):
            raise bucket_error(bucket, exc, "delete", key) from None
        raise ObjectLockedError(
            f"object {key} is locked until {until.isoformat()} (S3 Object Lock)",
            "it can be deleted once the lock lapses; the next run after that deletes it",
            until=until) from None


def bucket_error(bucket: S3Bucket, exc: BaseException, action: str, key: str | None,
                 ) -> Exception:
    from pitrflow.storage.s3_errors import translate

    return translate(exc, bucket.place, action, key)


def lock_status(bucket: S3Bucket) -> LockStatus:
    """The bucket's versioning and Object Lock configuration, as pitr check reports them."""
    from botocore.exceptions import BotoCoreError, ClientError

    settings = bucket.settings
    mode, days = settings.lock_mode or "", settings.lock_days
    try:
        versioning = bucket.client.get_bucket_versioning(Bucket=settings.bucket).get("Status")
    except (BotoCoreError, ClientError) as exc:
        return LockStatus(mode, days, None, False,
                          f"cannot read the versioning of bucket {settings.bucket}: "
                          f"{error_code(exc) or type(exc).__name__}")
    try:
        config = bucket.client.get_object_lock_configuration(Bucket=settings.bucket)
        enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
    except ClientError as exc:
        if error_code(exc) not in ("ObjectLockConfigurationNotFoundError", "404"):
            return LockStatus(mode, days, versioning, False,
                              f"cannot read the Object Lock configuration of bucket "
                              f"{settings.bucket}: {error_code(exc)}")
        enabled = False
    return LockStatus(mode, days, versioning, enabled)
