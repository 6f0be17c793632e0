"""Keys of an encrypted repository as users meet them: rekey (and resuming one), a wrong
passphrase, a missing KMS key, and turning encryption on for an unencrypted repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pitrflow.config import parse_config
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import EncryptionKeyError, RepositoryError
from pitrflow.storage.crypto_format import MAGIC
from pitrflow.storage.open import open_driver
from pitrflow.storage.rekey import rekey_repository
from tests.conftest import Env, restored_ids
from tests.encryption import encrypt_env, key_files, stored_fs, stored_s3, with_passphrase
from tests.integration import test_pitr_postgres as pitr
from tests.s3server import S3Server, bucket_of

OLD, NEW = "PITR_TEST_OLD_PASSPHRASE", "PITR_TEST_NEW_PASSPHRASE"


def run_pitr(env: Env, *args: str, home: Path | None = None,
             ) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)
    environ.pop("PREFECT_API_URL", None)
    if home is not None:  # a command that runs a flow, on Prefect's ephemeral API
        environ["PREFECT_HOME"] = str(home)
        environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    return subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config",
                           str(env.config_path), *args], capture_output=True, text=True,
                          timeout=300, check=False, env=environ)


def one_line_error(result: subprocess.CompletedProcess[str], *words: str,
                   flow: bool = False) -> str:
    """The command's one error line (for a flow run, among Prefect's own log lines)."""
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if flow:
        lines = [line for line in lines if line.startswith("error [")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def point_at(env: Env, var: str) -> Env:
    """Make the config's passphrase_env name `var` (as a user does after a rekey)."""
    text = env.config_path.read_text()
    start = text.index("passphrase_env = ")
    end = text.index("\n", start)
    text = text[:start] + f'passphrase_env = "{var}"' + text[end:]
    env.config_path.write_text(text)
    env.config = parse_config(text, env.config_path)
    return env


def backup_and_ship(env: Env) -> tuple[int, object]:
    env.commit_row()
    take_backup(env.instance, env.repo)
    last = env.commit_row()
    ship_wal(env.instance, env.repo)
    return last


def test_rekey_then_restore_with_the_new_passphrase_and_the_old_is_refused(
        pg18, make_env, monkeypatch: pytest.MonkeyPatch) -> None:
    env = with_passphrase(make_env(pg18), monkeypatch, "the old passphrase", OLD)
    monkeypatch.setenv(NEW, "the new passphrase")
    last_id, after = backup_and_ship(env)
    before = stored_fs(env)

    result = run_pitr(env, "repo", "rekey", "--new-passphrase-env", NEW)
    assert result.returncode == 0, result.stderr
    assert "rekeyed: 1 data keys wrapped under master key" in result.stdout
    assert f'now set [repository.encryption] to passphrase_env = "{NEW}"' in result.stdout
    assert "passphrase" not in result.stdout.replace("passphrase_env", "").replace(
        "--new-passphrase", "")
    assert stored_fs(env) == before, "rekey rewrote data objects"
    assert len([k for k in key_files(env.root / "repo") if k.startswith("master-")]) == 1

    refused = one_line_error(run_pitr(env, "info", "main"), "does not open master key",
                             "which wraps data key")
    assert "error [encryption-key]" in refused and "the old passphrase" not in refused
    assert run_pitr(env, "info", "main").returncode == 12

    point_at(env, NEW)
    outcome = pitr.restore(env, after, "rekeyed")
    assert restored_ids(outcome.port) == list(range(1, last_id + 1))
    # Rekeying again to the key already in use changes nothing and says so.
    again = run_pitr(env, "repo", "rekey", "--new-passphrase-env", NEW)
    assert again.returncode == 0 and "rekeyed: 0 data keys" in again.stdout


def test_an_interrupted_rekey_leaves_both_keys_working_and_finishes_when_run_again(
        pg18, make_s3_env, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    env = with_passphrase(make_s3_env(pg18), monkeypatch, "the old passphrase", OLD)
    monkeypatch.setenv(NEW, "the new passphrase")
    last_id, after = backup_and_ship(env)
    before = stored_s3(s3.client(), bucket_of(env))

    # The old key files cannot be removed: the rekey stops after wrapping under the new key.
    deletes = s3.proxy.fail(503, lambda req: req.method == "DELETE")
    with pytest.raises(RepositoryError):
        rekey_repository(env.config.repository, passphrase_env=NEW)
    assert deletes.injected > 0
    s3.proxy.reset()
    assert read_catalog(env.repo, "main").backups, "the old passphrase stopped working"
    point_at(env, NEW)
    assert read_catalog(env.repo, "main").backups, "the new passphrase does not work yet"

    # Run again, now with the config already naming the new key: it finishes.
    result = rekey_repository(env.config.repository, passphrase_env=NEW)
    assert result.removed and not result.locked
    assert stored_s3(s3.client(), bucket_of(env)) == before
    point_at(env, OLD)
    with pytest.raises(EncryptionKeyError, match="does not open master key"):
        read_catalog(env.repo, "main")
    point_at(env, NEW)
    outcome = pitr.restore(env, after, "resumed")
    assert restored_ids(outcome.port) == list(range(1, last_id + 1))


def test_a_wrong_passphrase_is_one_line_and_writes_nothing(
        pg18, make_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = with_passphrase(make_env(pg18), monkeypatch, "the right passphrase", OLD)
    backup_and_ship(env)
    before = stored_fs(env), key_files(env.root / "repo")
    monkeypatch.setenv(OLD, "a wrong passphrase")

    with pytest.raises(EncryptionKeyError) as caught:
        take_backup(env.instance, env.repo)
    epoch = read_wrap_epoch(env.root / "repo")
    assert f"wraps data key {epoch}" in caught.value.message
    with pytest.raises(EncryptionKeyError):
        ship_wal(env.instance, env.repo)
    assert (stored_fs(env), key_files(env.root / "repo")) == before
    cli = run_pitr(env, "info", "main")
    assert cli.returncode == 12
    line = one_line_error(cli, "error [encryption-key]", epoch, "nothing was written")
    assert "a wrong passphrase" not in line and "the right passphrase" not in line

    monkeypatch.delenv(OLD)
    one_line_error(run_pitr(env, "info", "main"), f"environment variable {OLD}", "not set")


def read_wrap_epoch(root: Path) -> str:
    [wrap] = [name for name in key_files(root) if name.startswith("epoch-")]
    return wrap.split("-")[-1].split(".")[0]


def test_a_missing_kms_key_is_one_line_and_writes_nothing(
        pg18, make_env, s3: S3Server, tmp_path: Path) -> None:
    env = encrypt_env(make_env(pg18), 'kms_key_id = "alias/pitrflow-no-such-key"\n'
                                      f'kms_region = "us-east-1"\nkms_endpoint_url = "{s3.url}"')
    with pytest.raises(EncryptionKeyError, match="KMS key alias/pitrflow-no-such-key does not "
                                                  "exist"):
        take_backup(env.instance, env.repo)
    cli = run_pitr(env, "backup", "full", "main", home=tmp_path / "prefect")
    one_line_error(cli, "KMS key alias/pitrflow-no-such-key does not exist", "nothing was written",
                   flow=True)
    assert cli.returncode == 12
    repo_dir = env.root / "repo"
    assert not repo_dir.exists() or not any(repo_dir.rglob("*"))


def test_an_unencrypted_repository_turned_encrypted_reads_old_and_refuses_new_plaintext(
        pg18, make_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = make_env(pg18)
    old_last, old_after = backup_and_ship(env)
    old_objects = set(stored_fs(env))

    with_passphrase(env, monkeypatch)
    new_last, new_after = backup_and_ship(env)
    stored = stored_fs(env)
    assert all(not stored[k].startswith(MAGIC) for k in old_objects)
    assert all(stored[k].startswith(MAGIC) for k in set(stored) - old_objects)
    info = json.loads(run_pitr(env, "info", "main", "--json").stdout)
    assert [b["encryption"] is not None for b in info["backups"]] == [False, True]

    outcome = pitr.restore(env, old_after, "old")  # the unencrypted backup and its WAL
    assert restored_ids(outcome.port) == list(range(1, old_last + 1))
    outcome = pitr.restore(env, new_after, "new")
    assert restored_ids(outcome.port) == list(range(1, new_last + 1))

    # Something without [repository.encryption] puts plaintext where ciphertext was: refused.
    plain = open_driver(env.config.repository)
    new_wal = next(e for e in read_catalog(env.repo, "main").wal_entries()
                   if e.key not in old_objects)
    plain.put_bytes(new_wal.key, env.repo.get_bytes(new_wal.key))
    fetched = subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config",
                              str(env.config_path), "wal-fetch", "main", new_wal.segment,
                              str(tmp_path / "seg")], capture_output=True, text=True,
                             check=False, env=dict(os.environ))
    assert fetched.returncode == 255
    one_line_error(fetched, new_wal.key, "is not encrypted, but the repository is")
    # And an old object replaced by other plaintext is refused too.
    old_wal = next(e for e in read_catalog(env.repo, "main").wal_entries()
                   if e.key in old_objects)
    plain.put_bytes(old_wal.key, b"not the segment that was there")
    with pytest.raises(RepositoryError, match="is not encrypted, but the repository is"):
        env.repo.get_bytes(old_wal.key)
