"""pitrflow: point-in-time recovery for PostgreSQL and SQL Server.

The core package never imports Prefect: flows and tasks live beside it and
call into it, so the CLI's fast commands (info, wal-fetch) stay fast.
"""

__version__ = "0.1.0"
