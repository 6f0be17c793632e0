"""Errors the SQL Server planner raises.

Kept as plain exceptions with ``message`` and ``hint`` so the planner stays free of
the rest of pitrflow; they are meant to be re-parented under ``pitrflow.errors``.
"""

from __future__ import annotations


class SqlServerPlanError(Exception):
    """The planner refused: ``message`` names the object, ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} HINT: {self.hint}" if self.hint else self.message


class MsdbHistoryError(SqlServerPlanError):
    """A recorded msdb row is malformed, so nothing can be planned from it."""
