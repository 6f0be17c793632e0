"""One bucket behind a boto3 client: settings, retries, timeouts, and error wording.

The client is made on first use, so a process that only reads a prefetched
spool (PostgreSQL's restore_command) never resolves credentials at all.
Retries use boto3's own modes (standard by default, with backoff and jitter,
on throttling, 5xx and dropped connections); AWS_RETRY_MODE and
AWS_MAX_ATTEMPTS in the environment override the defaults, as for any AWS tool.
Every call goes through `call`, which turns botocore's exceptions into the one-line
errors of s3_errors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from pitrflow.config import RepositoryConfig
from pitrflow.errors import ConfigError, RepositoryError
from pitrflow.storage.s3_credentials import resolve_keys
from pitrflow.storage.s3_errors import S3Place, translate

DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_RETRY_MODE = "standard"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
_SSE_MODES = ("AES256", "aws:kms")


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str  # "" or ending in "/"
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    credentials_block: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_mode: str = DEFAULT_RETRY_MODE
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT
    # object_lock: the mode and how long each new object stays locked (s3_lock).
    lock_mode: str | None = None
    lock_period: timedelta | None = None

    @property
    def lock_days(self) -> int:
        return self.lock_period.days if self.lock_period else 0

    @property
    def endpoint(self) -> str:
        """The endpoint as messages name it."""
        if self.endpoint_url:
            return self.endpoint_url
        return f"AWS S3 ({self.region})" if self.region else "AWS S3"

    @property
    def place(self) -> S3Place:
        return S3Place(self.bucket, self.prefix, self.endpoint)

    def put_args(self) -> dict[str, str]:
        """Arguments every new object gets: storage class and server-side encryption."""
        args: dict[str, str] = {}
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse == "aws:kms" and self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} is {raw!r}, not a number",
                          f"unset it or give a whole number (default {default})") from None
    if value < 1:
        raise ConfigError(f"environment variable {name} is {value}", "use 1 or more")
    return value


def settings_from_config(config: RepositoryConfig) -> S3Settings:
    """Parse `url = "s3://bucket/prefix"` and the other [repository] keys."""
    assert config.url is not None
    parsed = urlparse(config.url)
    bucket = parsed.netloc
    if parsed.scheme != "s3" or not bucket or parsed.query or parsed.fragment:
        raise ConfigError(f"repository.url {config.url!r} is not an S3 URL",
                          'write it as url = "s3://bucket" or "s3://bucket/prefix"')
    prefix = parsed.path.strip("/")
    if prefix and ".." in prefix.split("/"):
        raise ConfigError(f"repository.url {config.url!r} has '..' in its prefix",
                          "use a plain prefix such as s3://bucket/pitrflow")
    if config.sse is not None and config.sse not in _SSE_MODES:
        raise ConfigError(f"repository.sse is {config.sse!r}",
                          'use "AES256" or "aws:kms" (with sse_kms_key_id), or leave it out')
    if config.sse_kms_key_id and config.sse != "aws:kms":
        raise ConfigError("repository.sse_kms_key_id is set but repository.sse is not aws:kms",
                          'set sse = "aws:kms" or remove sse_kms_key_id')
    mode = os.environ.get("AWS_RETRY_MODE") or DEFAULT_RETRY_MODE
    if mode not in ("standard", "adaptive", "legacy"):
        raise ConfigError(f"environment variable AWS_RETRY_MODE is {mode!r}",
                          "use standard or adaptive")
    lock = config.object_lock
    return S3Settings(
        lock_mode=lock.mode if lock else None,
        lock_period=timedelta(days=lock.days) if lock else None,
        bucket=bucket, prefix=f"{prefix}/" if prefix else "",
        endpoint_url=config.endpoint_url, region=config.region,
        storage_class=config.storage_class, sse=config.sse,
        sse_kms_key_id=config.sse_kms_key_id, credentials_block=config.credentials_block,
        max_attempts=_env_int("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS), retry_mode=mode,
    )


def make_client(settings: S3Settings) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=settings.region,
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=16,
        # S3-compatible stores (MinIO, Ceph) want path-style addressing.
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        # Integrity is ours: Content-MD5 on every upload, SHA-256 on every read.
        # The newer default checksum trailers break many S3-compatible stores.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="pitrflow",
    )
    keys = resolve_keys(settings.credentials_block)
    session = boto3.session.Session(**(keys.session_kwargs() if keys else {}))
    try:
        return session.client("s3", endpoint_url=settings.endpoint_url, config=config)
    except ValueError as exc:  # botocore rejects a malformed endpoint URL this way
        raise ConfigError(f"repository.endpoint_url {settings.endpoint_url!r} is not usable: "
                          f"{exc}", "write it as http(s)://host[:port]") from None


class S3Bucket:
    """The bucket, its key prefix, and a lazily made, thread-safe boto3 client."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.place = settings.place
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        from botocore.exceptions import BotoCoreError

        try:
            return make_client(self.settings)
        except BotoCoreError as exc:
            raise translate(exc, self.place, "connecting") from None

    def full_key(self, key: str) -> str:
        return self.settings.prefix + key

    def call(self, action: str, key: str | None, method: str, *, bucket_call: bool = False,
             **kwargs: Any) -> Any:
        """client.<method>(Bucket=..., **kwargs), with failures as one-line errors."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.settings.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise translate(exc, self.place, action, key, bucket_call=bucket_call) from None

    def guarded(self, action: str, key: str | None, fn: Callable[[], Any]) -> Any:
        """Run `fn` (which talks to S3), with failures as one-line errors."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except RepositoryError:
            raise
        except (BotoCoreError, ClientError) as exc:
            raise translate(exc, self.place, action, key) from None
