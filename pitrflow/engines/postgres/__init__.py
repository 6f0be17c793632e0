"""PostgreSQL engine: command builders, base backups, WAL shipping, recovery."""
