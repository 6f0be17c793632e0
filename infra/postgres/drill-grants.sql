-- The one grant the nightly recovery drill adds on the *source* server.
--
-- The drill's generated suites compare the restored copy with the source: for every user
-- table they read the catalog (primary keys, NOT NULL columns; open to any role) and the
-- current row count, and `SELECT count(*)` needs SELECT on the table.  pg_read_all_data
-- (PostgreSQL 14+) grants exactly read access, nothing else.  It does not widen what the
-- role can see: a role with REPLICATION can already copy every file of the cluster with
-- pg_basebackup.  Leave it out if you run no drill, or set [instances.X.drill] so no source
-- is read, and the drill fails with "permission denied for table ..." instead.
--
--     psql -v ON_ERROR_STOP=1 -d postgres -f infra/postgres/drill-grants.sql

\if :{?role}
\else
  \set role pitrflow
\endif

GRANT pg_read_all_data TO :"role";
