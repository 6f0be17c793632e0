"""Every configuration key pitrflow reads, with its type and default, table by table.

config.py checks a file against these; keeping them apart keeps the whole list
of keys readable on one page.
"""

from __future__ import annotations

from typing import Any

from pitrflow.config_schema import REQUIRED

REPOSITORY_SCHEMA: dict[str, tuple[type, Any]] = {
    "path": (str, None),
    "url": (str, None),
    "endpoint_url": (str, None),
    "region": (str, None),
    "storage_class": (str, None),
    "sse": (str, None),
    "sse_kms_key_id": (str, None),
    "credentials_block": (str, None),
    "process_max": (int, None),
    "bundle_size_mb": (int, 32),
    "frame_size_mb": (int, 4),
    "encryption": (dict, None),
    "object_lock": (dict, None),
}

INSTANCE_SCHEMA: dict[str, tuple[type, Any]] = {
    "engine": (str, REQUIRED),
    "host": (str, REQUIRED),
    "port": (int, 5432),
    "user": (str, "postgres"),
    "database": (str, "postgres"),
    "password_env": (str, None),
    "password_block": (str, None),
    "connection_block": (str, None),
    "bin_dir": (str, None),
    "slot": (str, ""),
    "compress": (str, "worker"),
    "compress_level": (int, 3),
    "compress_workers": (int, 2),
    "run_as": (str, "pitrflow"),
    "incremental_fallback": (bool, True),
    "backup_timeout_seconds": (int, 6 * 3600),
    "ship_timeout_seconds": (int, 1800),
    "wal_fetch_parallel": (int, 4),
    "max_rate": (str, ""),
    "follow": (bool, False),
    "partial_interval": (int, 10),
    "mark_interval": (int, 60),
    "synchronous": (bool, False),
    "follow_dir": (str, "/var/tmp/pitrflow-follow"),
    "staging_dir": (str, "/var/tmp/pitrflow-staging"),
    "drill": (dict, None),
    "retention": (dict, None),
    "check": (dict, None),
    "odbc_driver": (str, "FreeTDS"),
    "encrypt": (bool, True),
    "trust_server_certificate": (bool, False),
    "backup_dir_server": (str, ""),
    "backup_dir_worker": (str, None),
    "data_dir_server": (str, ""),
    "compression": (bool, True),
    "url_stripes": (int, 1),
}

RETENTION_SCHEMA: dict[str, tuple[type, Any]] = {
    "full_count": (int, None),
    "window_days": (float, None),
}

SCHEDULES_SCHEMA: dict[str, tuple[type, Any]] = {
    "spread_minutes": (int, 60),
}
# The spread stays under the 6-hour incremental interval, so 18:00 plus any offset
# is still the same day and every instance keeps the day's order.
MAX_SPREAD_MINUTES = 360

CHECK_SCHEMA: dict[str, tuple[type, Any]] = {
    "max_backup_age_hours": (float, 26.0),
    "max_mark_age_minutes": (float, 30.0),
    "max_drill_age_hours": (float, 26.0),
    "max_slot_retained_mb": (float, 10240.0),
    "max_follower_lag_seconds": (float, 60.0),
}


DRILL_SCHEMA: dict[str, tuple[type, Any]] = {
    "scratch_dir": (str, None),
    "keep_on_failure": (bool, False),
    "row_count_tolerance": (float, 0.2),
    "max_lag_seconds": (int, 3600),
    "freshness": (dict, None),
    "checks_dir": (str, None),
    "timeout_seconds": (int, 6 * 3600),
    "exact_count_max_mb": (float, 16.0),
}

ENGINES = ("postgresql", "sqlserver")
PASSWORD_SOURCES = ("password_env", "password_block", "connection_block")
COMPRESS = ("worker", "client", "server", "none")
# (key, lowest, highest, what it is): sizes in MiB.
TRANSFER_LIMITS = (
    ("process_max", 1, 256, "threads that compress backups and fetch restores"),
    ("frame_size_mb", 1, 256, "MiB of raw data per zstd frame"),
    ("bundle_size_mb", 1, 4096, "MiB of small files per bundle"),
)
