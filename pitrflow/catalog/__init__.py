"""What backups and WAL exist, read from the repository itself."""
