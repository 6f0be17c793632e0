"""pitrflow.config: the documented file shape, and one precise line for every mistake."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from pitrflow.config import (
    CONFIG_ENV,
    Config,
    InstanceConfig,
    RepositoryConfig,
    load_config,
    parse_config,
)
from pitrflow.errors import ConfigError

SOURCE = Path("/etc/pitrflow/pitr.toml")

GOOD = """
[repository]
path = "/var/lib/pitrflow/repo"

[instances.main]
engine = "postgresql"
host = "db1.example.com"
port = 5433
user = "backup"
database = "app"
password_env = "PGPASSWORD_MAIN"
bin_dir = "/usr/lib/postgresql/18/bin"
"""

INSTANCE = """
[instances.main]
engine = "postgresql"
host = "db1"
"""


def config_error(text: str, source: Path = SOURCE) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source)
    error = caught.value
    assert error.hint, "every configuration error says how to fix it"
    assert error.exit_status == 2
    return error


def with_repo(body: str) -> str:
    return '[repository]\npath = "/srv/repo"\n' + body


# --- the documented shape ---


def test_documented_shape_parses_into_typed_values() -> None:
    config = parse_config(GOOD, SOURCE)

    assert config.source == SOURCE
    assert config.repository == RepositoryConfig(path=Path("/var/lib/pitrflow/repo"))
    assert config.repository.location == "/var/lib/pitrflow/repo"
    assert list(config.instances) == ["main"]
    main = config.instance("main")
    assert main.name == "main"
    assert main.engine == "postgresql"
    assert main.host == "db1.example.com"
    assert main.port == 5433
    assert main.user == "backup"
    assert main.database == "app"
    assert main.password_env == "PGPASSWORD_MAIN"
    assert main.bin_dir == Path("/usr/lib/postgresql/18/bin")


def test_omitted_keys_take_their_defaults() -> None:
    main = parse_config(with_repo(INSTANCE), SOURCE).instance("main")

    assert main == InstanceConfig(name="main", engine="postgresql", host="db1")
    assert main.port == 5432
    assert main.user == "postgres"
    assert main.database == "postgres"
    assert main.password_env is None
    assert main.bin_dir is None
    assert main.compress == "worker"
    assert main.incremental_fallback is True
    assert main.max_rate == ""


def test_several_instances_and_no_instances() -> None:
    text = with_repo(INSTANCE + '\n[instances."reports-2"]\nengine = "postgresql"\nhost = "db2"\n')
    config = parse_config(text, SOURCE)
    assert sorted(config.instances) == ["main", "reports-2"]
    assert config.instance("reports-2").host == "db2"

    empty = parse_config('[repository]\npath = "/srv/repo"\n', SOURCE)
    assert empty.instances == {}


def test_relative_repository_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    source = tmp_path / "conf" / "pitr.toml"
    config = parse_config('[repository]\npath = "backups/repo"\n', source)
    assert config.repository.path == (tmp_path / "conf" / "backups" / "repo").resolve()

    up = parse_config('[repository]\npath = "../elsewhere"\n', source)
    assert up.repository.path == (tmp_path / "elsewhere").resolve()


def test_absolute_repository_path_is_kept() -> None:
    config = parse_config('[repository]\npath = "/data/repo"\n', Path("/somewhere/else/p.toml"))
    assert config.repository.path == Path("/data/repo")


def test_s3_url_repository() -> None:
    text = '[repository]\nurl = "s3://bucket/prefix"\nregion = "eu-west-1"\n'
    repo = parse_config(text, SOURCE).repository
    assert repo.path is None
    assert repo.url == "s3://bucket/prefix"
    assert repo.region == "eu-west-1"
    assert repo.location == "s3://bucket/prefix"


# --- every mistake is one ConfigError naming the dotted key and the file ---


def test_unknown_instance_key_names_dotted_key_and_file() -> None:
    error = config_error(with_repo(INSTANCE + 'prot = 5432\n'))
    assert error.message == f"unknown key instances.main.prot in {SOURCE}"
    assert "port" in (error.hint or "")


def test_unknown_repository_key() -> None:
    error = config_error('[repository]\npath = "/srv/repo"\nbucket = "b"\n')
    assert error.message == f"unknown key repository.bucket in {SOURCE}"


@pytest.mark.parametrize("key", ["engine", "host"])
def test_missing_required_key(key: str) -> None:
    lines = [line for line in INSTANCE.splitlines() if not line.startswith(key)]
    error = config_error(with_repo("\n".join(lines) + "\n"))
    assert error.message == f"missing key instances.main.{key} in {SOURCE}"


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ('port = "x"', "'x'"),
        ("port = true", "True"),
        ("port = 5432.0", "5432.0"),
    ],
)
def test_port_of_the_wrong_type(line: str, shown: str) -> None:
    error = config_error(with_repo(INSTANCE + line + "\n"))
    assert error.message == f"instances.main.port in {SOURCE} must be int, got {shown}"


def test_string_key_given_a_number() -> None:
    error = config_error(with_repo(INSTANCE + "user = 7\n"))
    assert error.message == f"instances.main.user in {SOURCE} must be str, got 7"


def test_bool_key_given_a_string() -> None:
    error = config_error(with_repo(INSTANCE + 'incremental_fallback = "yes"\n'))
    assert "instances.main.incremental_fallback" in error.message
    assert "must be bool" in error.message


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_port_out_of_range(port: int) -> None:
    error = config_error(with_repo(INSTANCE + f"port = {port}\n"))
    assert error.message == f"instances.main.port in {SOURCE} is out of range"
    assert error.hint == "use 1-65535"


@pytest.mark.parametrize("port", [1, 65535])
def test_port_range_edges_are_accepted(port: int) -> None:
    config = parse_config(with_repo(INSTANCE + f"port = {port}\n"), SOURCE)
    assert config.instance("main").port == port


def test_both_path_and_url_refused() -> None:
    error = config_error('[repository]\npath = "/srv/repo"\nurl = "s3://b/p"\n')
    assert "repository.path" in error.message
    assert "repository.url" in error.message
    assert str(SOURCE) in error.message
    assert "exactly one" in error.message


def test_neither_path_nor_url_refused() -> None:
    error = config_error('[repository]\nregion = "eu-west-1"\n')
    assert error.message == (
        f"repository in {SOURCE} needs exactly one of repository.path or repository.url"
    )


def test_empty_path_counts_as_no_path() -> None:
    error = config_error('[repository]\npath = ""\n')
    assert "exactly one of repository.path or repository.url" in error.message


@pytest.mark.parametrize("url", ["gs://bucket/prefix", "https://s3.amazonaws.com/b", "bucket"])
def test_url_must_be_s3(url: str) -> None:
    error = config_error(f'[repository]\nurl = "{url}"\n')
    assert error.message == f"repository.url in {SOURCE} must start with s3://, got {url!r}"


@pytest.mark.parametrize("name", ["bad name", "-leading", "a/b", "x" * 64, "é"])
def test_bad_instance_name(name: str) -> None:
    body = INSTANCE.replace("[instances.main]", f'[instances."{name}"]')
    error = config_error(with_repo(body))
    assert error.message == f"instance name {name!r} in {SOURCE} is not allowed"


@pytest.mark.parametrize("name", ["a", "db.prod-1", "X_9", "x" * 63])
def test_allowed_instance_names(name: str) -> None:
    body = INSTANCE.replace("[instances.main]", f'[instances."{name}"]')
    config = parse_config(with_repo(body), SOURCE)
    assert config.instance(name).name == name


def test_unsupported_engine() -> None:
    error = config_error(with_repo(INSTANCE.replace("postgresql", "mysql")))
    assert error.message == f"instances.main.engine in {SOURCE} is 'mysql'"
    assert "postgresql" in (error.hint or "")


def test_bad_compress_and_max_rate() -> None:
    compress = config_error(with_repo(INSTANCE + 'compress = "lz4"\n'))
    assert compress.message == f"instances.main.compress in {SOURCE} is 'lz4'"
    rate = config_error(with_repo(INSTANCE + 'max_rate = "50G"\n'))
    assert rate.message == f"instances.main.max_rate in {SOURCE} is '50G'"


def test_transfer_keys_default_and_validate() -> None:
    import os

    from pitrflow.storage.base import MIB, TransferSettings

    default = parse_config(GOOD, SOURCE).repository
    assert default.transfer == TransferSettings(process_max=os.cpu_count() or 1,
                                                bundle_size=32 * MIB, frame_size=4 * MIB)
    text = GOOD.replace('[repository]\n', '[repository]\nprocess_max = 3\nbundle_size_mb = 16\n'
                        'frame_size_mb = 2\n')
    assert parse_config(text, SOURCE).repository.transfer == TransferSettings(3, 16 * MIB, 2 * MIB)
    for line, message in [
        ("process_max = 0", f"repository.process_max in {SOURCE} is 0, outside 1..256"),
        ("frame_size_mb = 300", f"repository.frame_size_mb in {SOURCE} is 300, outside 1..256"),
        ("frame_size_mb = 64", f"repository.frame_size_mb in {SOURCE} (64) is larger than "
                               "repository.bundle_size_mb (32)"),
        ('process_max = "2"', f"repository.process_max in {SOURCE} must be int, got '2'"),
    ]:
        error = config_error(GOOD.replace("[repository]\n", f"[repository]\n{line}\n"))
        assert error.message == message


def test_unknown_top_level_table() -> None:
    error = config_error(with_repo(INSTANCE + "\n[instance.extra]\nengine = 'postgresql'\n"))
    assert error.message == f"unknown top-level key instance in {SOURCE}"
    assert "[instances.NAME]" in (error.hint or "")


def test_missing_repository_table() -> None:
    error = config_error(INSTANCE)
    assert error.message == f"missing table [repository] in {SOURCE}"


def test_instance_that_is_not_a_table() -> None:
    error = config_error(with_repo('[instances]\nmain = "db1"\n'))
    assert error.message == f"instances.main in {SOURCE} must be a table"


def test_instances_that_is_not_a_table() -> None:
    error = config_error('instances = 3\n[repository]\npath = "/srv/repo"\n')
    assert error.message == f"instances in {SOURCE} must be tables"


def test_repository_that_is_not_a_table() -> None:
    error = config_error('repository = "/srv/repo"\n')
    assert error.message == f"repository in {SOURCE} must be a table"


@pytest.mark.parametrize("text", ["[repository\npath = 1\n", 'port = \n', "a = 'x' b\n"])
def test_invalid_toml(text: str) -> None:
    error = config_error(text)
    assert error.message.startswith(f"{SOURCE} is not valid TOML: ")
    assert error.one_line().startswith("error [config]: ")


# --- load_config and instance lookup ---


def test_load_config_without_a_path_or_env_names_pitr_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config(None)
    assert CONFIG_ENV == "PITR_CONFIG"
    assert caught.value.message == "no configuration file given"
    assert "PITR_CONFIG" in (caught.value.hint or "")
    assert "PITR_CONFIG" in caught.value.one_line()


def test_load_config_reads_pitr_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pitr.toml"
    path.write_text('[repository]\npath = "repo"\n' + INSTANCE)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    config = load_config(None)
    assert config.source == path.resolve()
    assert config.repository.path == (tmp_path / "repo").resolve()
    assert config.instance("main").host == "db1"


def test_load_config_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.message == f"configuration file {missing} does not exist"


def test_load_config_reports_errors_against_the_resolved_file(tmp_path: Path) -> None:
    path = tmp_path / "pitr.toml"
    path.write_text('[repository]\npath = "/srv/repo"\nflavour = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message == f"unknown key repository.flavour in {path.resolve()}"


def test_unknown_instance_lists_the_configured_ones() -> None:
    text = with_repo(INSTANCE + '\n[instances.alpha]\nengine = "postgresql"\nhost = "db2"\n')
    config = parse_config(text, SOURCE)
    with pytest.raises(ConfigError) as caught:
        config.instance("nope")
    assert caught.value.message == f"instance 'nope' is not configured in {SOURCE}"
    assert caught.value.hint is not None
    assert "configured instances: alpha, main" in caught.value.hint
    assert "[instances.nope]" in caught.value.hint


def test_unknown_instance_with_none_configured() -> None:
    config = Config(source=SOURCE, repository=RepositoryConfig(path=Path("/srv/repo")))
    with pytest.raises(ConfigError) as caught:
        config.instance("main")
    assert "configured instances: none" in (caught.value.hint or "")


# --- slot names ---


@pytest.mark.parametrize(
    ("name", "slot"),
    [
        ("main", "pitrflow_main"),
        ("db_prod_1", "pitrflow_db_prod_1"),
        # Names that change when cleaned get a hash, so "db-1" and "db_1" stay apart.
        ("Main", "pitrflow_main_" + hashlib.sha1(b"Main").hexdigest()[:8]),
        ("db.prod-1", "pitrflow_db_prod_1_" + hashlib.sha1(b"db.prod-1").hexdigest()[:8]),
    ],
)
def test_default_slot_name_is_derived_from_the_instance_name(name: str, slot: str) -> None:
    body = INSTANCE.replace("[instances.main]", f'[instances."{name}"]')
    instance = parse_config(with_repo(body), SOURCE).instance(name)
    assert instance.slot == ""
    assert instance.slot_name == slot
    assert re.fullmatch(r"[a-z0-9_]+", instance.slot_name)


def test_explicit_slot_wins() -> None:
    instance = parse_config(with_repo(INSTANCE + 'slot = "my_slot"\n'), SOURCE).instance("main")
    assert instance.slot_name == "my_slot"


@pytest.mark.parametrize("length", [54, 55, 62, 63])
def test_default_slot_name_fits_postgresql_limit_for_every_allowed_name(length: int) -> None:
    # PostgreSQL refuses slot names longer than NAMEDATALEN - 1 = 63 bytes.
    name = "a" * length
    body = INSTANCE.replace("[instances.main]", f'[instances."{name}"]')
    instance = parse_config(with_repo(body), SOURCE).instance(name)
    assert len(instance.slot_name) <= 63
    assert re.fullmatch(r"pitrflow_[a-z0-9_]+", instance.slot_name)
    if length <= 54:
        assert instance.slot_name == "pitrflow_" + name


def test_long_instance_names_keep_distinct_slot_names() -> None:
    first, second = "a" * 62 + "b", "a" * 62 + "c"
    body = (INSTANCE.replace("[instances.main]", f'[instances."{first}"]')
            + INSTANCE.replace("[instances.main]", f'[instances."{second}"]'))
    config = parse_config(with_repo(body), SOURCE)
    slots = {config.instance(first).slot_name, config.instance(second).slot_name}
    assert len(slots) == 2
    assert all(len(slot) <= 63 for slot in slots)


# --- fleet: schedule spread, connection blocks ---


def test_schedule_spread_defaults_to_an_hour_and_is_validated() -> None:
    assert parse_config(GOOD, SOURCE).schedules.spread_minutes == 60
    text = with_repo(INSTANCE) + "\n[schedules]\nspread_minutes = 0\n"
    assert parse_config(text, SOURCE).schedules.spread_minutes == 0
    error = config_error(with_repo(INSTANCE) + "\n[schedules]\nspread_minutes = 361\n")
    assert error.message == (f"schedules.spread_minutes in {SOURCE} must be from 0 to 360, "
                             "got 361")
    assert config_error(with_repo(INSTANCE) + "\n[schedules]\nspread = 5\n").message == (
        f"unknown key schedules.spread in {SOURCE}")
    assert config_error(with_repo(INSTANCE) + '\n[schedules]\nspread_minutes = "1h"\n'
                        ).message.startswith(f"schedules.spread_minutes in {SOURCE} must be int")


def test_connection_block_names_the_login_and_excludes_the_other_password_sources() -> None:
    parsed = parse_config(with_repo(INSTANCE + 'connection_block = "db1-login"\n'), SOURCE)
    assert parsed.instances["main"].connection_block == "db1-login"
    for other in ('password_env = "PW"', 'password_block = "pw"'):
        error = config_error(with_repo(INSTANCE + other + '\nconnection_block = "db1-login"\n'))
        assert error.message == (f"instances.main in {SOURCE} sets both "
                                 f"{other.split(' ')[0]} and connection_block")
    both = config_error(with_repo(INSTANCE + 'password_env = "PW"\npassword_block = "pw"\n'))
    assert both.message.endswith("sets both password_env and password_block")


# --- encryption and Object Lock ---


def test_encryption_table_names_one_master_key() -> None:
    config = parse_config(with_repo('[repository.encryption]\npassphrase_env = "PITR_KEY"\n'),
                          SOURCE)
    assert config.repository.encryption is not None
    assert config.repository.encryption.passphrase_env == "PITR_KEY"
    kms = parse_config(with_repo('[repository.encryption]\nkms_key_id = "alias/backups"\n'
                                 'kms_region = "eu-west-1"\n'), SOURCE)
    assert kms.repository.encryption is not None
    assert kms.repository.encryption.kms_key_id == "alias/backups"
    assert parse_config(GOOD, SOURCE).repository.encryption is None


@pytest.mark.parametrize(("body", "words"), [
    ("", "needs exactly one of passphrase_env, passphrase_block, kms_key_id"),
    ('passphrase_env = "A"\nkms_key_id = "k"\n', "not passphrase_env and kms_key_id"),
    ('passphrase = "hunter2"\n', "unknown key repository.encryption.passphrase"),
    ('passphrase_env = "A"\nkms_region = "eu-west-1"\n', "kms_region"),
    ("passphrase_env = 3\n", "repository.encryption.passphrase_env"),
])
def test_encryption_mistakes_are_one_line_naming_the_key(body: str, words: str) -> None:
    error = config_error(with_repo("[repository.encryption]\n" + body))
    assert words in error.message and str(SOURCE) in error.message
    assert "hunter2" not in error.message + (error.hint or "")


def test_object_lock_on_s3() -> None:
    config = parse_config('[repository]\nurl = "s3://b/p"\n'
                          'object_lock = { mode = "COMPLIANCE", days = 35 }\n', SOURCE)
    lock = config.repository.object_lock
    assert lock is not None and (lock.mode, lock.days) == ("COMPLIANCE", 35)


@pytest.mark.parametrize(("repo", "lock", "words"), [
    ('path = "/srv/repo"', '{ mode = "COMPLIANCE", days = 7 }', "needs an S3 repository"),
    ('url = "s3://b"', '{ mode = "compliance", days = 7 }', "repository.object_lock.mode"),
    ('url = "s3://b"', '{ mode = "GOVERNANCE", days = 0 }', "repository.object_lock.days"),
    ('url = "s3://b"', '{ mode = "GOVERNANCE" }', "missing key repository.object_lock.days"),
    ('url = "s3://b"', '{ mode = "GOVERNANCE", days = 7, years = 1 }',
     "unknown key repository.object_lock.years"),
])
def test_object_lock_mistakes(repo: str, lock: str, words: str) -> None:
    assert words in config_error(f"[repository]\n{repo}\nobject_lock = {lock}\n").message


def test_backup_to_url_cannot_be_encrypted() -> None:
    text = ('[repository]\nurl = "s3://bucket/p"\n[repository.encryption]\n'
            'passphrase_env = "K"\n[instances.sales]\nengine = "sqlserver"\nhost = "h"\n'
            'database = "Sales"\nuser = "u"\nbackup_dir_server = "s3://minio:9000/bucket/p"\n')
    error = config_error(text)
    assert "instances.sales.backup_dir_server" in error.message
    assert "encrypted" in error.message
