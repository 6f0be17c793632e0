"""Errors the SQL Server planner raises.

They sit under ``RestoreRefusedError`` so the CLI and the flows treat a refused
SQL Server plan exactly like a refused PostgreSQL one (code ``restore-refused``,
exit status 8, one line with a ``HINT:``), while tests can still catch the
planner's own class.
"""

from __future__ import annotations

from pitrflow.errors import RestoreRefusedError


class SqlServerPlanError(RestoreRefusedError):
    """The planner refused: ``message`` names the object, ``hint`` says what to do."""

    def __str__(self) -> str:
        return f"{self.message} HINT: {self.hint}" if self.hint else self.message


class MsdbHistoryError(SqlServerPlanError):
    """A recorded msdb row is malformed, so nothing can be planned from it."""
