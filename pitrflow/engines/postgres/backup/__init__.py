"""PostgreSQL base backups: full and incremental, with pg_basebackup, into the repository."""
