"""infra/postgres/backup-role.sql, run with psql as a DBA would, is enough and no more.

The role it creates takes a real full backup, ships WAL and takes an
incremental through the core; the same role without the file's function
grants cannot ship, and it cannot read table rows until drill-grants.sql.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pitrflow import procs
from pitrflow.config import InstanceConfig
from pitrflow.devtools.localpg import LocalCluster
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.backup.incremental import take_incremental
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.connection import connect
from pitrflow.engines.postgres.drill.facts import read_source_catalog
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import ServerError
from tests.conftest import Env

INFRA = Path(__file__).resolve().parents[2] / "infra" / "postgres"
ROLE = "pitrflow_least"


def psql_file(cluster: LocalCluster, sql_file: Path, role: str) -> None:
    procs.run([cluster.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"role={role}",
               "-h", cluster.host, "-p", str(cluster.port), "-U", cluster.superuser,
               "-d", "postgres", "-f", str(sql_file)], what="psql")


def drop_role(cluster: LocalCluster, role: str) -> None:
    with cluster.connect() as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(psycopg.sql.Identifier(role)))
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))


@pytest.fixture
def least(env18: Env) -> Iterator[InstanceConfig]:
    drop_role(env18.cluster, ROLE)
    psql_file(env18.cluster, INFRA / "backup-role.sql", ROLE)
    psql_file(env18.cluster, INFRA / "backup-role.sql", ROLE)  # a second run changes nothing
    yield dataclasses.replace(env18.instance, user=ROLE)
    drop_role(env18.cluster, ROLE)


def test_role_is_not_superuser_and_holds_only_the_listed_grants(env18: Env,
                                                                least: InstanceConfig) -> None:
    rows = env18.sql("SELECT rolsuper, rolreplication, rolcreatedb, rolcreaterole, rolbypassrls "
                     "FROM pg_roles WHERE rolname = %s", (ROLE,))
    assert rows == [(False, True, False, False, False)]
    granted = {r[0] for r in env18.sql(
        "SELECT p.proname FROM pg_proc p WHERE has_function_privilege(%s, p.oid, 'EXECUTE') "
        "AND p.proname IN ('pg_switch_wal', 'pg_create_physical_replication_slot', "
        "'pg_logical_emit_message', 'pg_control_system', 'pg_control_checkpoint', "
        "'pg_start_backup', 'pg_backup_start', 'pg_promote', 'pg_read_file')", (ROLE,))}
    assert granted == {"pg_switch_wal", "pg_create_physical_replication_slot",
                       "pg_logical_emit_message", "pg_control_system", "pg_control_checkpoint"}
    members = {r[0] for r in env18.sql(
        "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s", (ROLE,))}
    assert members == {"pg_read_all_settings"}


def test_full_backup_ship_and_incremental_as_the_least_privileged_role(
        env18: Env, least: InstanceConfig) -> None:
    repo = env18.repo
    full = take_backup(least, repo)
    env18.commit_row()
    shipped = ship_wal(least, repo)
    assert shipped.segments_shipped
    env18.commit_row()
    incremental = take_incremental(least, repo, allow_full_fallback=False)
    assert incremental.manifest.parent == full.manifest.id
    catalog = read_catalog(repo, "main")
    assert [b.id for b in catalog.backups] == [full.manifest.id, incremental.manifest.id]
    assert catalog.marks


def test_without_the_function_grants_a_ship_is_refused(env18: Env) -> None:
    drop_role(env18.cluster, ROLE)
    env18.sql(f"CREATE ROLE {ROLE} WITH LOGIN REPLICATION")
    try:
        bare = dataclasses.replace(env18.instance, user=ROLE)
        with pytest.raises((ServerError, psycopg.errors.InsufficientPrivilege)):
            ship_wal(bare, env18.repo)
    finally:
        drop_role(env18.cluster, ROLE)


def test_the_drill_reads_source_rows_only_after_drill_grants(env18: Env,
                                                             least: InstanceConfig) -> None:
    env18.commit_row()
    with connect(least) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        read_source_catalog(conn)
    psql_file(env18.cluster, INFRA / "drill-grants.sql", ROLE)
    with connect(least) as conn:
        facts = {f.qualified_table: f for f in read_source_catalog(conn)}
    assert facts["public.items"].row_count == 1
    assert facts["public.items"].primary_key == ("id",)


def test_pg_read_all_settings_is_not_needed_by_what_pitrflow_reads_today(
        env18: Env, least: InstanceConfig) -> None:
    env18.sql(f"REVOKE pg_read_all_settings FROM {ROLE}")
    take_backup(least, env18.repo)
    env18.commit_row()
    assert ship_wal(least, env18.repo).segments_shipped
