"""What a PostgreSQL instance's repository holds: the snapshot, retention, expire, verify."""
