"""Drill baselines on a real PostgreSQL 18: what they record, when, and how long they live."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from pitrflow.config import parse_config
from pitrflow.drill.baseline import load_baseline
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.expire import execute_expire
from pitrflow.engines.postgres.catalog.retention import plan_expire
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.drill.baseline_source import read_baseline
from pitrflow.engines.postgres.wal.walnames import parse_segment_name
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.storage.fs import FsRepository
from pitrflow.storage.layout import BaselineEntry, parse_key
from tests.conftest import Env

FRESHNESS = '\n[instances.main.drill]\nfreshness = { "public.items" = "at" }\n'


def _baseline(env: Env, limit: int | None, freshness: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    with env.cluster.connect() as conn:
        return read_baseline(conn, instance="main", origin="mark", origin_id="m",
                             origin_time=datetime.now(UTC),
                             freshness=freshness or {"public.items": "at"},
                             exact_limit_bytes=limit)


def test_small_tables_are_counted_large_ones_estimated_partitions_summed(env18: Env) -> None:
    env = env18
    env.sql("DROP TABLE IF EXISTS wide, parts")
    env.sql("CREATE TABLE wide (filler text)")
    env.sql("INSERT INTO wide SELECT repeat('w', 400) FROM generate_series(1, 2000)")
    env.sql("CREATE TABLE parts (id int NOT NULL, at timestamptz) PARTITION BY RANGE (id)")
    env.sql("CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM (0) TO (100)")
    env.sql("CREATE TABLE parts_b PARTITION OF parts FOR VALUES FROM (100) TO (1000)")
    env.sql("INSERT INTO parts SELECT g, now() FROM generate_series(1, 300) g")
    for _ in range(7):
        env.commit_row()
    env.sql("DELETE FROM items WHERE id = (SELECT min(id) FROM items)")
    newest = env.sql("SELECT max(at) FROM items")[0][0]

    baseline = _baseline(env, limit=256 * 1024)  # wide is ~900 kB, the others a page or two

    tables = baseline.by_name()
    assert "public.parts_a" not in tables  # counted by their parent, as count(*) does
    items, wide, parts = tables["public.items"], tables["public.wide"], tables["public.parts"]
    assert items.exact == 6 and items.newest == {"at": newest}
    assert items.primary_key == ("id",)
    assert items.column_types["at"] == "timestamp with time zone"
    assert wide.exact is None and wide.estimates, wide
    assert parts.exact == 300 and parts.not_null == ("id",)
    assert len((parts.rewrites or "").split(",")) == 2  # one file per partition
    assert baseline.read_from <= baseline.read_to
    # Exact counts can be switched off: estimates only.
    assert all(t.exact is None for t in _baseline(env, limit=0).tables)


def test_a_locked_table_keeps_its_estimate_and_nothing_waits(env18: Env) -> None:
    env = env18
    env.commit_row()
    holder = psycopg.connect(host=env.cluster.host, port=env.cluster.port, user="postgres",
                             dbname="postgres")
    try:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        baseline = _baseline(env, limit=1024 * 1024)
    finally:
        holder.rollback()
        holder.close()
    items = baseline.table("public.items")
    assert items is not None and items.exact is None and items.newest == {}
    assert any("public.items: locked" in note for note in baseline.notes)


def test_a_role_without_select_records_estimates_only(env18: Env) -> None:
    env = env18
    env.sql("DROP ROLE IF EXISTS baseline_reader")
    env.sql("CREATE ROLE baseline_reader LOGIN")
    env.commit_row()
    try:
        with psycopg.connect(host=env.cluster.host, port=env.cluster.port,
                             user="baseline_reader", dbname="postgres", autocommit=True) as conn:
            baseline = read_baseline(conn, instance="main", origin="mark", origin_id="m",
                                     origin_time=datetime.now(UTC),
                                     freshness={"public.items": "at"}, exact_limit_bytes=10**9)
    finally:
        env.sql("DROP ROLE baseline_reader")
    items = baseline.table("public.items")
    assert items is not None and items.exact is None and items.primary_key == ("id",)
    assert any("public.items: no SELECT privilege" in note for note in baseline.notes)


def test_each_ship_and_backup_stores_a_baseline_named_after_it(make_env, pg18) -> None:  # type: ignore[no-untyped-def]
    env = make_env(pg18, FRESHNESS)
    env.commit_row()
    backup = take_backup(env.instance, env.repo).manifest
    env.commit_row()
    mark = ship_wal(env.instance, env.repo).mark
    catalog = read_catalog(env.repo, "main")

    assert [(b.origin, b.time, b.lsn) for b in catalog.baselines] == [
        ("backup", backup.stop_time, backup.stop_lsn), ("mark", mark.time, mark.lsn)]
    stored = load_baseline(env.repo.get_bytes(catalog.baselines[1].key), "k")
    assert stored.origin == "mark" and stored.origin_id == catalog.marks[0].key
    # Read after the mark: it holds both rows and the newest one's time.
    assert stored.read_from >= mark.time
    items = stored.table("public.items")
    assert items is not None and items.exact == 2
    assert items.newest["at"] == env.sql("SELECT max(at) FROM items")[0][0]


class _RefusesBaselines(FsRepository):
    def put_bytes(self, key: str, data: bytes):  # type: ignore[no-untyped-def]
        if "/baselines/" in key:
            raise OSError(28, "No space left on device")
        return super().put_bytes(key, data)


def test_a_baseline_that_cannot_be_stored_only_warns(make_env, pg18,  # type: ignore[no-untyped-def]
                                                    caplog: pytest.LogCaptureFixture) -> None:
    env = make_env(pg18)
    repo = _RefusesBaselines(Path(str(env.config.repository.path)))
    env.commit_row()
    caplog.set_level(logging.WARNING, logger="pitrflow.baseline")
    take_backup(env.instance, repo)
    outcome = ship_wal(env.instance, repo)

    catalog = read_catalog(repo, "main")
    assert len(catalog.backups) == 1 and catalog.marks[-1].lsn == outcome.mark.lsn
    assert catalog.baselines == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "pitrflow.baseline"]
    assert len(warnings) == 2
    assert warnings[0].startswith("no drill baseline recorded after backup ")
    assert warnings[1].startswith("no drill baseline recorded after mark main/marks/")
    assert all("No space left on device" in w and "\n" not in w for w in warnings)


def test_baselines_expire_exactly_with_their_marks_and_the_wal(make_env, pg18) -> None:  # type: ignore[no-untyped-def]
    env = make_env(pg18, "\n[instances.main.retention]\nfull_count = 1\n")
    repo = env.repo
    env.commit_row()
    take_backup(env.instance, repo)
    for _ in range(2):
        env.commit_row()
        ship_wal(env.instance, repo)
    second = take_backup(env.instance, repo).manifest
    for _ in range(2):
        env.commit_row()
        ship_wal(env.instance, repo)
    before = read_catalog(repo, "main")
    assert len(before.baselines) == 6

    plan = plan_expire(before, env.instance.retention, datetime.now(UTC))
    result = execute_expire(repo, before, plan)
    after = read_catalog(repo, "main")

    assert result.baselines_deleted == 3  # the first backup's and its two marks'
    kept_marks = {(m.time, m.lsn) for m in after.marks}
    mark_baselines = [b for b in after.baselines if b.origin == "mark"]
    # A mark's baseline lives exactly as long as its mark...
    assert {(b.time, b.lsn) for b in mark_baselines} == kept_marks
    assert {(m.time, m.lsn) for m in plan.delete_marks} == {
        (b.time, b.lsn) for b in plan.delete_baselines if b.origin == "mark"}
    # ...and as the WAL it lets a drill judge: every kept one's segment is still stored.
    for b in after.baselines:
        segno = (b.lsn - 1) // after.segment_size
        assert segno in after.wal[b.timeline], b.key
    assert [b.time for b in after.baselines if b.origin == "backup"] == [second.stop_time]
    for b in after.baselines:
        load_baseline(repo.get_bytes(b.key), b.key)  # all still readable
    assert all(parse_segment_name(e.segment, after.segment_size)[1]
               >= second.start_lsn // after.segment_size for e in after.wal_entries())


def test_baseline_keys_parse_back_and_other_names_are_not_baselines() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=UTC)
    from pitrflow.storage.layout import baseline_key

    key = baseline_key("main", when, 1, 0x3000000, "mark")
    assert key == "main/baselines/20260102T030405.000600Z_00000001_0000000003000000_mark.json.zst"
    assert parse_key("main", key, 10) == BaselineEntry(key, when, 1, 0x3000000, "mark")
    assert parse_key("main", key.replace("_mark", "_other"), 10) is None
    with pytest.raises(ValueError, match="origin"):
        baseline_key("main", when, 1, 1, "log")


def test_exact_count_limit_is_validated(tmp_path: Path) -> None:
    from pitrflow.errors import ConfigError

    base = '[repository]\npath = "r"\n[instances.main]\nengine = "postgresql"\nhost = "h"\n'
    config = parse_config(base + "[instances.main.drill]\nexact_count_max_mb = 2\n",
                          tmp_path / "c.toml")
    assert config.instance("main").drill.exact_count_max_mb == 2.0
    with pytest.raises(ConfigError, match=r"main\.drill\.exact_count_max_mb in .*c\.toml"):
        parse_config(base + "[instances.main.drill]\nexact_count_max_mb = -1\n",
                     tmp_path / "c.toml")
