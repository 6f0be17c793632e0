"""Every S3 failure a user can meet, worded once, as one-line repository errors.

boto3 raises a zoo of exceptions (ClientError codes, connection errors,
credential errors) whose text means little to someone restoring a database
at 3 a.m.  The driver sends each one through `translate`, so a missing
bucket, denied access, rejected credentials or an unreachable endpoint
always reads the same: what failed, on which bucket/key/endpoint, and what
to do.  No traceback reaches the CLI, and no credential ever appears in a
message (boto3 never puts secrets in its exceptions; we add none).
"""

from __future__ import annotations

from dataclasses import dataclass

from pitrflow.errors import ObjectNotFoundError, RepositoryError

# Codes S3 (and S3-compatible stores) return when the signature or the keys are wrong.
CREDENTIAL_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
    "TokenRefreshRequired", "InvalidToken", "RequestExpired", "InvalidClientTokenId",
    "AuthorizationHeaderMalformed", "RequestTimeTooSkewed",
})
DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403", "Forbidden",
                          "AccountProblem"})
MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

CREDENTIALS_HINT = ("provide credentials through the environment (AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), AWS_PROFILE, an instance role, "
                    "or a Prefect block named in repository.credentials_block")


@dataclass(frozen=True)
class S3Place:
    """Where a repository lives, for messages: bucket, key prefix, endpoint."""

    bucket: str
    prefix: str
    endpoint: str

    def url(self, key: str | None = None) -> str:
        base = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{base}/{key}" if key else base


def error_code(exc: BaseException) -> str:
    """The S3 error code of a ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        message = str(response.get("Error", {}).get("Message", "")).strip()
        if message:
            return message
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _connection_phrase(exc: BaseException) -> str:
    """A short cause for a broken connection (botocore's own text repeats the whole URL)."""
    from botocore import exceptions as bce

    if isinstance(exc, bce.ConnectionClosedError):
        return "the connection was closed before a response came"
    if isinstance(exc, bce.ReadTimeoutError):
        return "no response before the read timeout"
    if isinstance(exc, bce.ResponseStreamingError | bce.IncompleteReadError):
        return "the response broke off mid-stream"
    return type(exc).__name__


def translate(exc: BaseException, place: S3Place, action: str, key: str | None = None,
              *, bucket_call: bool = False) -> RepositoryError:
    """The one-line RepositoryError for a boto3/botocore exception raised by `action`.

    `key` is the repository key (without the prefix) the call was about;
    `bucket_call` says a 404 means the bucket, not an object, is missing.
    """
    from botocore import exceptions as bce

    target = place.url(key)
    code = error_code(exc)
    if code == "NoSuchBucket" or (bucket_call and code in ("404", "NotFound")):
        return RepositoryError(
            f"bucket {place.bucket} does not exist at {place.endpoint}",
            f"create the bucket, or fix repository.url (now {place.url()}) or "
            "repository.endpoint_url")
    if code in MISSING_KEY_CODES and key is not None:
        return ObjectNotFoundError(
            f"object {key} is missing from repository {place.url()}",
            "the repository was changed outside pitrflow; run pitr verify")
    if code in CREDENTIAL_CODES:
        return RepositoryError(
            f"{place.endpoint} rejected the credentials ({code}) for {action} of {target}",
            "the keys are wrong or expired: " + CREDENTIALS_HINT)
    if code in DENIED_CODES:
        return RepositoryError(
            f"access denied for {action} of {target} at {place.endpoint}",
            "allow the worker's credentials s3:ListBucket, s3:GetObject, s3:PutObject, "
            "s3:DeleteObject and s3:AbortMultipartUpload on the bucket and prefix")
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError
                  | bce.CredentialRetrievalError):
        return RepositoryError(f"no usable AWS credentials for {place.url()}: "
                               f"{_error_message(exc)}", CREDENTIALS_HINT)
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError
                  | bce.ProxyConnectionError | bce.SSLError):
        return RepositoryError(
            f"cannot reach the S3 endpoint {place.endpoint} for {action} of {target}",
            "check repository.endpoint_url and repository.region, DNS and the network "
            "(requests were retried with backoff)")
    if isinstance(exc, bce.NoRegionError | bce.InvalidRegionError):
        return RepositoryError(f"no valid AWS region for {place.url()}: {_error_message(exc)}",
                               'set repository.region, e.g. region = "us-east-1"')
    if isinstance(exc, bce.HTTPClientError | bce.IncompleteReadError | ConnectionError):
        return RepositoryError(
            f"the connection to {place.endpoint} failed during {action} of {target}, "
            f"after retries: {_connection_phrase(exc)}",
            "the network or the endpoint is unstable; run again (an interrupted upload "
            "is never visible)")
    if code:
        return RepositoryError(
            f"S3 {action} of {target} failed at {place.endpoint}: {code}: {_error_message(exc)}",
            "the endpoint kept failing after retries with backoff; run again later, and "
            "check the endpoint's health if it persists")
    return RepositoryError(f"S3 {action} of {target} failed: {_error_message(exc)}",
                           "check repository.url, endpoint_url and region")
