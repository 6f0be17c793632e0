"""BACKUP TO URL: the worker seals, plans from and checks what the server wrote into S3.

No SQL Server can run here, so the server's part (writing the objects, recording
msdb rows) is played by putting the objects and using recorded rows; everything
pitrflow does with them runs for real against an S3 endpoint over HTTP (moto).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from pitrflow.config import RepositoryConfig, parse_config
from pitrflow.engines.sqlserver.backup import own_backup_rows, store_url_backup
from pitrflow.engines.sqlserver.catalog import read_sqlserver_catalog
from pitrflow.engines.sqlserver.msdb import rows_from_json
from pitrflow.engines.sqlserver.record import object_key
from pitrflow.engines.sqlserver.restore import _stage, dry_run_script, prepare_restore
from pitrflow.errors import ChecksumMismatchError, ServerError
from pitrflow.storage.s3 import S3Repository
from tests.s3server import S3Server
from tests.unit.sqlserver.conftest import FIXTURES


def _setup(s3: S3Server, tmp_path: Path, stripes: int = 2):
    bucket = s3.new_bucket()
    repo = S3Repository.from_config(RepositoryConfig(
        url=f"s3://{bucket}/prod", region="us-east-1", endpoint_url=s3.url))
    config = parse_config(f"""
[repository]
url = "s3://{bucket}/prod"

[instances.sales]
engine = "sqlserver"
host = "sql1.internal"
database = "Sales"
user = "pitrflow"
password_env = "PITR_SALES_PASSWORD"
backup_dir_server = "s3://minio.internal:9000/{bucket}/prod"
url_stripes = {stripes}
""", tmp_path / "pitr.toml")
    return repo, config.instance("sales")


def _server_writes(repo: S3Repository, instance, kind: str, backup_id: str, set_id: int,
                   names: list[str]) -> tuple[list, dict[str, str], dict[str, bytes]]:
    """What BACKUP TO URL leaves: the objects, and msdb's rows naming their URLs."""
    template = [r for r in rows_from_json(FIXTURES / "plain_chain.json")
                if r.backup_set_id == set_id][0]
    urls = {f"{instance.backup_dir_server}/{object_key(instance.name, kind, backup_id, n)}": n
            for n in names}
    payloads = {}
    rows = []
    for number, (url, name) in enumerate(urls.items(), 1):
        payloads[name] = f"stripe {number} of {backup_id} ".encode() * 5000
        repo.put_bytes(object_key(instance.name, kind, backup_id, name), payloads[name])
        rows.append({**dataclasses.asdict(template), "physical_device_name": url,
                     "family_sequence_number": number, "family_count": len(names),
                     "device_type": 9})
    first = next(iter(urls))
    return own_backup_rows(rows, first, kind), urls, payloads


def test_url_backup_is_sealed_planned_and_read_by_url(s3: S3Server, tmp_path: Path) -> None:
    repo, instance = _setup(s3, tmp_path)
    stored = {}
    for kind, backup_id, set_id in (("full", "20240309T230001Z-F", 2001),
                                    ("log", "20240309T231500Z-L", 2002),
                                    ("log", "20240309T233000Z-L", 2003)):
        names = ([f"sales_{backup_id}_{n}of2.bak" for n in (1, 2)] if kind == "full"
                 else [f"sales_{backup_id}.trn"])
        rows, urls, payloads = _server_writes(repo, instance, kind, backup_id, set_id, names)
        record = store_url_backup(repo, instance, kind, backup_id, rows, urls,
                                  compression=True, duration_seconds=1.0)
        assert [f.sha256 for f in record.files] == [
            hashlib.sha256(payloads[n]).hexdigest() for n in names]
        stored[backup_id] = urls

    catalog = read_sqlserver_catalog(repo, "sales")
    assert catalog.rejected == {} and len(catalog.records) == 3
    prepared = prepare_restore(instance, catalog, None)
    assert prepared.staging_worker is None
    script = dry_run_script(prepared)
    full_urls = list(stored["20240309T230001Z-F"])
    assert script[0] == (f"RESTORE FILELISTONLY FROM URL = N'{full_urls[0]}', "
                         f"URL = N'{full_urls[1]}' WITH FILE = 1")
    assert script[1].startswith(f"RESTORE DATABASE [{prepared.new_name}] FROM URL = N'"
                                f"{full_urls[0]}'")
    assert all("DISK" not in line for line in script)
    for staged in prepared.files:
        _stage(repo, staged)  # the pre-restore read-back passes on sound objects

    damaged = prepared.files[1]
    data = bytearray(repo.get_bytes(damaged.key))
    data[100] ^= 1
    repo.put_bytes(damaged.key, bytes(data))
    with pytest.raises(ChecksumMismatchError, match=damaged.key):
        _stage(repo, damaged)


def test_rows_for_other_urls_are_not_sealed(s3: S3Server, tmp_path: Path) -> None:
    repo, instance = _setup(s3, tmp_path, stripes=1)
    backup_id = "20240309T230001Z-F"
    rows, urls, _ = _server_writes(repo, instance, "full", backup_id, 2001,
                                   [f"sales_{backup_id}.bak"])
    elsewhere = {url.replace("/prod/", "/other/"): name for url, name in urls.items()}
    with pytest.raises(ServerError, match="not to the 1 URL"):
        store_url_backup(repo, instance, "full", backup_id, rows, elsewhere,
                         compression=True, duration_seconds=None)
    assert read_sqlserver_catalog(repo, "sales").records == [], "no manifest, no backup"


def test_dry_run_text_says_the_server_reads_by_url(s3: S3Server, tmp_path: Path) -> None:
    from pitrflow.engines.sqlserver.ops import render

    repo, instance = _setup(s3, tmp_path, stripes=1)
    backup_id = "20240309T230001Z-F"
    rows, urls, _ = _server_writes(repo, instance, "full", backup_id, 2001,
                                   [f"sales_{backup_id}.bak"])
    store_url_backup(repo, instance, "full", backup_id, rows, urls, compression=True,
                     duration_seconds=None)
    prepared = prepare_restore(instance, read_sqlserver_catalog(repo, "sales"), None)
    text = render(prepared, dry_run_script(prepared))
    assert "RESTORE FROM URL" in text and "None" not in text
    assert f"FROM URL = N'{next(iter(urls))}'" in text
