-- The least-privileged role pitrflow connects as, for backups and WAL shipping.
--
-- Run it as a superuser with psql, once per server (it is idempotent):
--     psql -v ON_ERROR_STOP=1 -d postgres -f infra/postgres/backup-role.sql
--     psql -v ON_ERROR_STOP=1 -d postgres -v role=pitrflow_db2 -f infra/postgres/backup-role.sql
-- then give the role a password without it landing in a file or a shell history:
--     psql -d postgres -c '\password pitrflow'
--
-- What each privilege is for:
--   REPLICATION                          pg_basebackup and pg_receivewal (replication protocol)
--   pg_create_physical_replication_slot  the slot pitrflow owns, created before the first backup
--   pg_switch_wal                        each ship run ends on a whole segment
--   pg_logical_emit_message              the timestamped ship marks (any target up to a mark is
--                                        reachable, even on an idle database)
--   pg_control_system, _checkpoint       system identifier and timeline, checked on every run
--   pg_read_all_settings                 settings only privileged roles may read; nothing
--                                        pitrflow reads today needs it (tested), so a
--                                        stricter policy may drop that line
-- On a stock PostgreSQL 15-18 only pg_switch_wal is revoked from PUBLIC; the other functions
-- are granted explicitly so the role keeps working on servers hardened with
-- REVOKE EXECUTE ... FROM PUBLIC.
-- No superuser, no CREATEDB/CREATEROLE, no table privileges: a backup reads files over the
-- replication protocol, never rows.  The nightly drill needs one more grant on the source:
-- see drill-grants.sql.

\if :{?role}
\else
  \set role pitrflow
\endif

SELECT format('CREATE ROLE %I WITH LOGIN REPLICATION', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec

ALTER ROLE :"role" WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;

GRANT pg_read_all_settings TO :"role";

-- Every overload that exists on this server version: pg_logical_emit_message gained a fourth
-- (flush) argument in PostgreSQL 17, so a fixed signature would fail on one version or another.
-- The bytea variant of pg_logical_emit_message is never called and is left out.
SELECT format('GRANT EXECUTE ON FUNCTION %s TO %I', p.oid::regprocedure, :'role')
  FROM pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::regnamespace
   AND p.proname IN ('pg_create_physical_replication_slot', 'pg_switch_wal',
                     'pg_logical_emit_message', 'pg_control_system', 'pg_control_checkpoint')
   AND pg_get_function_identity_arguments(p.oid) NOT LIKE '%bytea%'
 ORDER BY 1 \gexec
