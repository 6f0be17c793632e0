"""Typed configuration: load the TOML file, then validate it against a schema.

Every key and its default lives in the schemas below, so a typo surfaces at
load time as one line naming the dotted key and the file, never deep inside a
backup.  Passwords never live here: only the name of the environment variable
(or Prefect Secret block, or pitrflow connection block) that holds one.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pitrflow.config_keys import (
    CHECK_SCHEMA,
    COMPRESS,
    DRILL_SCHEMA,
    ENGINES,
    INSTANCE_SCHEMA,
    MAX_SPREAD_MINUTES,
    PASSWORD_SOURCES,
    REPOSITORY_SCHEMA,
    RETENTION_SCHEMA,
    SCHEDULES_SCHEMA,
    TRANSFER_LIMITS,
)
from pitrflow.config_protection import (
    EncryptionConfig,
    ObjectLockConfig,
    parse_encryption,
    parse_object_lock,
)
from pitrflow.config_schema import check_table as _check_table
from pitrflow.errors import ConfigError
from pitrflow.storage.base import MIB, TransferSettings, default_process_max

CONFIG_ENV = "PITR_CONFIG"
_INSTANCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class RepositoryConfig:
    path: Path | None = None
    url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    credentials_block: str | None = None
    process_max: int = field(default_factory=default_process_max)
    bundle_size_mb: int = 32
    frame_size_mb: int = 4
    encryption: EncryptionConfig | None = None
    object_lock: ObjectLockConfig | None = None

    @property
    def location(self) -> str:
        return self.url if self.url else str(self.path)

    @property
    def transfer(self) -> TransferSettings:
        return TransferSettings(process_max=self.process_max,
                                bundle_size=self.bundle_size_mb * MIB,
                                frame_size=self.frame_size_mb * MIB)


@dataclass(frozen=True)
class DrillConfig:
    """How the nightly recovery drill checks this instance."""

    scratch_dir: Path = Path("/var/tmp/pitrflow-drills")
    keep_on_failure: bool = False
    row_count_tolerance: float = 0.2
    max_lag_seconds: int = 3600
    freshness: dict[str, str] = field(default_factory=dict)
    checks_dir: Path | None = None
    timeout_seconds: int = 6 * 3600
    # Ship runs and backups record each table's row count exactly when it is
    # smaller than this (estimates above it); 0 records estimates only.
    exact_count_max_mb: float = 16.0


@dataclass(frozen=True)
class RetentionConfig:
    """What `pitr expire` keeps: N full chains and/or a recovery window in days."""

    full_count: int | None = None
    window_days: float | None = None

    @property
    def enabled(self) -> bool:
        return self.full_count is not None or self.window_days is not None


@dataclass(frozen=True)
class CheckConfig:
    """Limits `pitr check` holds the instance to."""

    max_backup_age_hours: float = 26.0
    max_mark_age_minutes: float = 30.0
    max_drill_age_hours: float = 26.0
    max_slot_retained_mb: float = 10240.0
    # Follow mode: the follower's recovery point may trail the server by this much (and
    # its heartbeat may be this old) before ship_logs and pitr check call it behind or gone.
    max_follower_lag_seconds: float = 60.0


@dataclass(frozen=True)
class InstanceConfig:
    name: str
    engine: str
    host: str
    port: int = 5432
    user: str = "postgres"
    database: str = "postgres"
    password_env: str | None = None
    password_block: str | None = None
    # A pitrflow connection block (its type follows the engine) holding the login.
    connection_block: str | None = None
    bin_dir: Path | None = None
    slot: str = ""
    # worker (= client): v2 bundles compressed by pitrflow's threads; server: v1, zstd on
    # the database host into staging (one stream to restore); none: v2 at zstd level 1.
    compress: str = "worker"
    compress_level: int = 3
    compress_workers: int = 2
    run_as: str = "pitrflow"
    incremental_fallback: bool = True
    backup_timeout_seconds: int = 6 * 3600
    ship_timeout_seconds: int = 1800
    wal_fetch_parallel: int = 4
    max_rate: str = ""  # pg_basebackup --max-rate, e.g. "50M": spares a busy server's disks
    # Follow mode (pitr ship --follow): pg_receivewal runs continuously; the segment in
    # progress is uploaded every partial_interval seconds and a mark written every
    # mark_interval seconds.  `follow` declares that a follower is meant to run, so the
    # batch ship_logs checks it instead of shipping.  synchronous: the receiver is a
    # synchronous standby (application_name = the slot name).
    follow: bool = False
    partial_interval: int = 10
    mark_interval: int = 60
    synchronous: bool = False
    follow_dir: Path = Path("/var/tmp/pitrflow-follow")
    # A cluster with user tablespaces cannot stream as one tar: pg_basebackup writes one
    # compressed tar per tablespace here, each read into bundles as it is written.
    staging_dir: Path = Path("/var/tmp/pitrflow-staging")
    drill: DrillConfig = field(default_factory=DrillConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    # engine = "sqlserver" only (checked in _sqlserver): the server writes backup files
    # into backup_dir_server as it sees that directory; the worker reads the same files
    # at backup_dir_worker.  data_dir_server: where restores put data and log files
    # (empty: the server's default data and log directories).
    odbc_driver: str = "FreeTDS"
    encrypt: bool = True
    trust_server_certificate: bool = False
    backup_dir_server: str = ""
    backup_dir_worker: Path | None = None
    data_dir_server: str = ""
    compression: bool = True
    # backup_dir_server = "s3://HOST[:PORT]/BUCKET/PREFIX" (SQL Server 2022+): the server
    # writes straight into the S3 repository; fulls and differentials over this many URLs.
    url_stripes: int = 1

    @property
    def backup_to_url(self) -> bool:
        return self.engine == "sqlserver" and self.backup_dir_server.startswith("s3://")

    @property
    def slot_name(self) -> str:
        if self.slot:
            return self.slot
        cleaned = re.sub(r"[^a-z0-9_]", "_", self.name.lower())
        name = "pitrflow_" + cleaned
        # Keep distinct instance names distinct ("db-1" vs "db_1") and within
        # PostgreSQL's 63-byte identifier limit.
        if cleaned != self.name or len(name) > 63:
            name = name[:54] + "_" + hashlib.sha1(self.name.encode()).hexdigest()[:8]
        return name


@dataclass(frozen=True)
class SchedulesConfig:
    """How `pitr deploy` lays the fleet's schedules out: each instance runs its day
    shifted by an offset from a hash of its name, within `spread_minutes`."""

    spread_minutes: int = 60


@dataclass(frozen=True)
class Config:
    source: Path
    repository: RepositoryConfig
    instances: dict[str, InstanceConfig] = field(default_factory=dict)
    schedules: SchedulesConfig = field(default_factory=SchedulesConfig)

    def instance(self, name: str) -> InstanceConfig:
        try:
            return self.instances[name]
        except KeyError:
            known = ", ".join(sorted(self.instances)) or "none"
            raise ConfigError(
                f"instance {name!r} is not configured in {self.source}",
                f"configured instances: {known}; add an [instances.{name}] table",
            ) from None


def _floats(raw: Any, schema: dict[str, tuple[type, Any]]) -> Any:
    """Accept `7` where a float is expected: TOML users rarely write `7.0`."""
    if not isinstance(raw, dict):
        return raw
    return {k: float(v) if schema.get(k, (None,))[0] is float and isinstance(v, int)
            and not isinstance(v, bool) else v for k, v in raw.items()}


def _repository(raw: Any, source: Path) -> RepositoryConfig:
    values = _check_table(raw, REPOSITORY_SCHEMA, "repository", source)
    if bool(values["path"]) == bool(values["url"]):
        raise ConfigError(
            f"repository in {source} needs exactly one of repository.path or repository.url",
            'use path = "/var/lib/pitrflow/repo" or url = "s3://bucket/prefix"',
        )
    if values["url"] and not str(values["url"]).startswith("s3://"):
        raise ConfigError(
            f"repository.url in {source} must start with s3://, got {values['url']!r}",
            "for a local directory use repository.path",
        )
    if values["process_max"] is None:
        values["process_max"] = default_process_max()
    for key, low, high, what in TRANSFER_LIMITS:
        if not low <= values[key] <= high:
            raise ConfigError(f"repository.{key} in {source} is {values[key]}, outside "
                              f"{low}..{high}", f"{key} is the number of {what}")
    if values["frame_size_mb"] > values["bundle_size_mb"]:
        raise ConfigError(
            f"repository.frame_size_mb in {source} ({values['frame_size_mb']}) is larger than "
            f"repository.bundle_size_mb ({values['bundle_size_mb']})",
            "a bundle holds whole frames: make bundle_size_mb at least frame_size_mb")
    if values["encryption"] is not None:
        values["encryption"] = parse_encryption(values["encryption"], source)
    if values["object_lock"] is not None:
        values["object_lock"] = parse_object_lock(values["object_lock"], bool(values["url"]),
                                                  source)
    path = values.pop("path")
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_absolute():
            path = (source.parent / path).resolve()
    return RepositoryConfig(path=path, **values)


def _instance(name: str, raw: Any, source: Path) -> InstanceConfig:
    dotted = f"instances.{name}"
    if not _INSTANCE_NAME.match(name):
        raise ConfigError(
            f"instance name {name!r} in {source} is not allowed",
            "use letters, digits, '_', '.', '-' (it becomes part of repository paths)",
        )
    values = _check_table(raw, INSTANCE_SCHEMA, dotted, source)
    sources = [key for key in PASSWORD_SOURCES if values[key]]
    if len(sources) > 1:
        raise ConfigError(f"{dotted} in {source} sets both {sources[0]} and {sources[1]}",
                          "name one place the password comes from: password_env, "
                          "password_block or connection_block")
    if values["engine"] not in ENGINES:
        raise ConfigError(
            f"{dotted}.engine in {source} is {values['engine']!r}",
            f"supported engines: {', '.join(ENGINES)}",
        )
    if values["compress"] not in COMPRESS:
        raise ConfigError(
            f"{dotted}.compress in {source} is {values['compress']!r}",
            f"use one of: {', '.join(COMPRESS)}",
        )
    if not 1 <= values["port"] <= 65535:
        raise ConfigError(f"{dotted}.port in {source} is out of range", "use 1-65535")
    if values["max_rate"] and not re.fullmatch(r"\d+[kM]?", values["max_rate"]):
        raise ConfigError(f"{dotted}.max_rate in {source} is {values['max_rate']!r}",
                          'use kilobytes per second, or a k/M suffix: "32000", "50M"')
    if values["bin_dir"]:
        values["bin_dir"] = Path(values["bin_dir"])
    _follow(values, dotted, source)
    values["drill"] = _drill(values["drill"] or {}, f"{dotted}.drill", source)
    retention = _check_table(_floats(values["retention"] or {}, RETENTION_SCHEMA),
                             RETENTION_SCHEMA, f"{dotted}.retention", source)
    if retention["full_count"] is not None and retention["full_count"] < 1:
        raise ConfigError(f"{dotted}.retention.full_count in {source} must be at least 1",
                          "the newest full chain is always kept")
    if retention["window_days"] is not None and retention["window_days"] <= 0:
        raise ConfigError(f"{dotted}.retention.window_days in {source} must be positive",
                          "e.g. window_days = 7")
    values["retention"] = RetentionConfig(**retention)
    values["check"] = CheckConfig(**_check_table(_floats(values["check"] or {}, CHECK_SCHEMA),
                                                 CHECK_SCHEMA, f"{dotted}.check", source))
    if values["engine"] == "sqlserver":
        _sqlserver(values, raw, dotted, source)
    elif values["backup_dir_worker"] is not None:
        values["backup_dir_worker"] = Path(values["backup_dir_worker"])
    return InstanceConfig(name=name, **values)


def _follow(values: dict[str, Any], dotted: str, source: Path) -> None:
    for key, top in (("partial_interval", 3600), ("mark_interval", 86400)):
        if not 1 <= values[key] <= top:
            raise ConfigError(f"{dotted}.{key} in {source} must be from 1 to {top} seconds, "
                              f"got {values[key]}", f"e.g. {key} = 10")
    for key in ("follow_dir", "staging_dir"):
        directory = Path(values[key]).expanduser()
        values[key] = directory if directory.is_absolute() else (
            source.parent / directory).resolve()
    if values["engine"] != "postgresql" and (values["follow"] or values["synchronous"]):
        raise ConfigError(f"{dotted}.follow and synchronous in {source} are for PostgreSQL",
                          "SQL Server ships log backups on the ship_logs schedule")


_SQLSERVER_REQUIRED = (
    ("database", '"Sales"'),
    ("user", '"pitrflow"'),
    ("backup_dir_server", "'D:\\Backups\\pitrflow' or '/var/opt/mssql/backup/pitrflow'"),
    ("backup_dir_worker", '"/mnt/sqlbackup/pitrflow"'),
)


def _sqlserver(values: dict[str, Any], raw: dict[str, Any], dotted: str, source: Path) -> None:
    """SQL Server needs what the PostgreSQL defaults would get wrong: its own port, a
    named database and login, and both views of the directory the server backs up to."""
    if "port" not in raw:
        values["port"] = 1433
    to_url = "://" in str(raw.get("backup_dir_server", ""))
    for key, example in _SQLSERVER_REQUIRED:
        if key == "backup_dir_worker" and to_url:
            continue  # the worker reaches URL backups through the S3 repository
        if not raw.get(key):
            raise ConfigError(f"missing key {dotted}.{key} in {source} (engine sqlserver)",
                              f"add {key} = {example} to [{dotted}]")
    if not 1 <= values["url_stripes"] <= 64:
        raise ConfigError(f"{dotted}.url_stripes in {source} must be from 1 to 64",
                          "SQL Server stripes a backup over at most 64 URLs")
    if to_url:
        _backup_url(values["backup_dir_server"], f"{dotted}.backup_dir_server", source)
        values["backup_dir_worker"] = None
        return
    worker = Path(values["backup_dir_worker"]).expanduser()
    values["backup_dir_worker"] = worker if worker.is_absolute() else source.parent / worker


_S3_URL_EXAMPLE = "s3://s3.eu-west-1.amazonaws.com/BUCKET/PREFIX or s3://minio.internal:9000/BUCKET/PREFIX"


def _backup_url(url: str, dotted: str, source: Path) -> tuple[str, str]:
    """The bucket and prefix of a BACKUP TO URL location (path style, as SQL Server wants)."""
    parsed = urlsplit(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.scheme != "s3" or not parsed.netloc or not parts or parsed.query:
        raise ConfigError(f"{dotted} in {source} must be s3://HOST[:PORT]/BUCKET[/PREFIX], "
                          f"got {url!r}", f"e.g. {_S3_URL_EXAMPLE} (SQL Server 2022+)")
    return parts[0], "/".join(parts[1:])


def _check_url_instances(config: Config) -> None:
    """A server writing BACKUP TO URL must write into the repository's own bucket and prefix,
    since the worker reads (and a restore finds) the files there."""
    for instance in config.instances.values():
        if not instance.backup_to_url:
            continue
        if config.repository.encryption is not None:
            raise ConfigError(
                f"instances.{instance.name}.backup_dir_server in {config.source} is a BACKUP TO "
                "URL location, but the repository is encrypted ([repository.encryption])",
                "the server would write (and read) its files unencrypted: use a backup_dir_server "
                "directory with backup_dir_worker, or leave the repository unencrypted")
        bucket, prefix = _backup_url(instance.backup_dir_server,
                                     f"instances.{instance.name}.backup_dir_server",
                                     config.source)
        repo_url = config.repository.url or ""
        parsed = urlsplit(repo_url)
        same = (parsed.netloc, parsed.path.strip("/")) == (bucket, prefix)
        if not same:
            raise ConfigError(
                f"instances.{instance.name}.backup_dir_server in {config.source} writes to "
                f"bucket {bucket!r} prefix {prefix!r}, but the repository is "
                f"{repo_url or config.repository.path}",
                f"BACKUP TO URL needs repository.url = \"s3://{bucket}"
                f"{'/' + prefix if prefix else ''}\": the server's URL and the repository must "
                "name the same bucket and prefix")


def _drill(raw: Any, dotted: str, source: Path) -> DrillConfig:
    values = _check_table(_floats(raw, DRILL_SCHEMA), DRILL_SCHEMA, dotted, source)
    if not 0.0 <= values["row_count_tolerance"] < 1.0:
        raise ConfigError(f"{dotted}.row_count_tolerance in {source} must be in [0, 1)",
                          "0.2 widens an estimated row count by 20% either way, and accepts "
                          "80% of the source's rows where no baseline precedes the target")
    if not 0.0 <= values["exact_count_max_mb"] <= 1024 * 1024:
        raise ConfigError(f"{dotted}.exact_count_max_mb in {source} must be from 0 to 1048576",
                          "tables smaller than this many megabytes are counted exactly at each "
                          "ship run and backup; 0 records estimates only")
    freshness = values["freshness"] or {}
    for table, column in freshness.items():
        if "." not in table or not isinstance(column, str):
            raise ConfigError(
                f"{dotted}.freshness.{table} in {source} must map schema.table to a column",
                'write e.g. freshness = { "public.orders" = "created_at" }')
    values["freshness"] = dict(freshness)
    for key in ("scratch_dir", "checks_dir"):
        if values[key] is not None:
            path = Path(values[key]).expanduser()
            values[key] = path if path.is_absolute() else (source.parent / path).resolve()
    if values["scratch_dir"] is None:
        values.pop("scratch_dir")
    return DrillConfig(**values)


def _schedules(raw: Any, source: Path) -> SchedulesConfig:
    values = _check_table(raw, SCHEDULES_SCHEMA, "schedules", source)
    if not 0 <= values["spread_minutes"] <= MAX_SPREAD_MINUTES:
        raise ConfigError(
            f"schedules.spread_minutes in {source} must be from 0 to {MAX_SPREAD_MINUTES}, "
            f"got {values['spread_minutes']}",
            "0 starts every instance on the hour; 60 spreads them over an hour")
    return SchedulesConfig(**values)


def parse_config(text: str, source: Path) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}", "fix the syntax") from None
    for key in raw:
        if key not in ("repository", "instances", "schedules"):
            raise ConfigError(
                f"unknown top-level key {key} in {source}",
                "known tables: [repository], [instances.NAME], [schedules]",
            )
    if "repository" not in raw:
        raise ConfigError(f"missing table [repository] in {source}", 'add path = "..."')
    instances_raw = raw.get("instances", {})
    if not isinstance(instances_raw, dict):
        raise ConfigError(f"instances in {source} must be tables", "use [instances.NAME]")
    instances = {n: _instance(n, v, source) for n, v in instances_raw.items()}
    config = Config(source=source, repository=_repository(raw["repository"], source),
                    instances=instances, schedules=_schedules(raw.get("schedules", {}), source))
    _check_url_instances(config)
    return config


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    raise ConfigError(
        "no configuration file given",
        f"pass --config FILE or set {CONFIG_ENV}",
    )


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    path = resolve_config_path(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist",
                          f"create it or point {CONFIG_ENV} at it") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}",
                          "check its permissions") from None
    return parse_config(text, path.resolve())
