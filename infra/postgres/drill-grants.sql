-- The one grant the nightly recovery drill adds on the *source* server.
--
-- The drill's generated suites compare the restored copy with the source as it was at the
-- target: each ship run and backup records a baseline of every user table (primary keys,
-- NOT NULL columns and row estimates, open to any role; exact counts of small tables and
-- the newest freshness values, which need SELECT on the table).  pg_read_all_data
-- (PostgreSQL 14+) grants exactly read access, nothing else.  It does not widen what the
-- role can see: a role with REPLICATION can already copy every file of the cluster with
-- pg_basebackup.  Without it, baselines and the drill's own read of the source hold
-- estimates only (their notes say so), and the drill's row-count bounds are wider.
--
--     psql -v ON_ERROR_STOP=1 -d postgres -f infra/postgres/drill-grants.sql

\if :{?role}
\else
  \set role pitrflow
\endif

GRANT pg_read_all_data TO :"role";
