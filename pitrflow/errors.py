"""One exception tree for every failure a user can see.

Each class carries a stable code and the CLI's exit status, so scripts and
monitoring can tell a refused restore from a broken repository without
parsing text.  Messages are one lowercase line naming the object; the hint
says what to do.
"""

from __future__ import annotations

from datetime import datetime


class PitrError(Exception):
    """Base of every error pitrflow reports to a user."""

    code = "pitr-error"
    exit_status = 1

    def __init__(self, message: str, hint: str | None = None, details: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Structured facts behind the message (a check's lines), for callers that show them.
        self.details = details

    def one_line(self) -> str:
        """The error as the single line the CLI prints."""
        text = f"error [{self.code}]: {self.message}"
        if self.hint:
            text += f" HINT: {self.hint}"
        return text


class ConfigError(PitrError):
    code = "config"
    exit_status = 2


class UsageError(PitrError):
    code = "usage"
    exit_status = 2


class ToolNotFoundError(PitrError):
    code = "tool-not-found"
    exit_status = 3


class ServerError(PitrError):
    """The database server refused or could not be reached."""

    code = "server"
    exit_status = 4


class CommandFailedError(PitrError):
    """A child process (pg_basebackup, pg_receivewal, ...) failed."""

    code = "command-failed"
    exit_status = 5


class RepositoryError(PitrError):
    code = "repository"
    exit_status = 6


class ChecksumMismatchError(RepositoryError):
    code = "checksum-mismatch"


class ObjectNotFoundError(RepositoryError):
    code = "object-not-found"


class ObjectAuthError(ChecksumMismatchError):
    """An encrypted object fails authentication: altered, truncated, or another object's bytes."""

    code = "authentication-failed"


class ObjectLockedError(RepositoryError):
    """A delete inside an S3 Object Lock retention period; `until` says when it lapses."""

    code = "object-locked"

    def __init__(self, message: str, hint: str | None = None, until: datetime | None = None,
                 ) -> None:
        super().__init__(message, hint)
        self.until = until


class EncryptionKeyError(PitrError):
    """The configured passphrase or KMS key does not open the repository's data keys.

    Not a RepositoryError: a reader that skips damaged objects (the catalog) must
    not mistake a wrong key for one damaged backup.
    """

    code = "encryption-key"
    exit_status = 12


class WalGapError(PitrError):
    code = "wal-gap"
    exit_status = 7


class RestoreRefusedError(PitrError):
    """The planner or executor refused before touching anything."""

    code = "restore-refused"
    exit_status = 8


class RecoveryFailedError(PitrError):
    code = "recovery-failed"
    exit_status = 9


class BackupRefusedError(PitrError):
    code = "backup-refused"
    exit_status = 10


class DrillFailedError(PitrError):
    """A recovery drill restored data that failed a check, or could not restore at all."""

    code = "drill-failed"
    exit_status = 11


class VerifyFailedError(PitrError):
    """`pitr verify` found a damaged or missing object."""

    code = "verify-failed"
    exit_status = 12


class CheckFailedError(PitrError):
    """A critical `pitr check` failed."""

    code = "check-failed"
    exit_status = 13


class OrchestratorUnreachableError(PitrError):
    """A Prefect server is configured but does not answer, and the work is scheduled work
    that must not silently bypass it."""

    code = "orchestrator-unreachable"
    exit_status = 14


def describe_error(exc: BaseException) -> str:
    """One line for a failure recorded rather than raised (a drill step, a report)."""
    if isinstance(exc, PitrError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class FollowerError(PitrError):
    """Follow mode: the follower is behind, gone, or cannot run."""

    code = "follower"
    exit_status = 15
