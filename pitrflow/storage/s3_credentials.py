"""Where S3 credentials come from: boto3's standard chain, or a named Prefect block.

The core never imports Prefect.  The tasks layer registers a resolver that
turns a block name into keys (a Prefect AWS credentials block, or a Secret
block holding JSON); without a block name boto3 finds credentials the usual
way (environment, profile, container or instance role).  Keys only ever go
into the boto3 session: never into a message, a log line or an artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pitrflow.errors import ConfigError


@dataclass(frozen=True)
class AwsKeys:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    def session_kwargs(self) -> dict[str, str]:
        kwargs = {"aws_access_key_id": self.access_key_id,
                  "aws_secret_access_key": self.secret_access_key}
        if self.session_token:
            kwargs["aws_session_token"] = self.session_token
        return kwargs


CredentialsResolver = Callable[[str], AwsKeys]
_resolver: CredentialsResolver | None = None


def register_credentials_resolver(resolver: CredentialsResolver) -> None:
    global _resolver
    _resolver = resolver


def keys_from_mapping(values: dict[str, object], block: str) -> AwsKeys:
    """AwsKeys from a Secret block's JSON value (aws_access_key_id, aws_secret_access_key)."""
    access = values.get("aws_access_key_id")
    secret = values.get("aws_secret_access_key")
    token = values.get("aws_session_token")
    if not isinstance(access, str) or not isinstance(secret, str):
        raise ConfigError(
            f"Prefect block {block!r} does not hold aws_access_key_id and aws_secret_access_key",
            'store JSON like {"aws_access_key_id": "...", "aws_secret_access_key": "..."} '
            "in a Secret block, or use an AWS credentials block")
    return AwsKeys(access, secret, token if isinstance(token, str) and token else None)


def resolve_keys(block: str | None) -> AwsKeys | None:
    """Keys from the named block; None lets boto3's standard chain decide."""
    if not block:
        return None
    if _resolver is None:
        raise ConfigError(
            f"repository.credentials_block names Prefect block {block!r}, but Prefect is not "
            "loaded in this process",
            "run through the pitr backup/ship/restore commands or the flows, or give the "
            "worker credentials through the environment, a profile or an instance role")
    return _resolver(block)
