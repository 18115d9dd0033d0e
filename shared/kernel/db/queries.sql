-- The kernel's own statements: the migration runner's (it owns schema_migrations), the server's
-- facts, and the local mode's database creation. Transaction control (BEGIN, COMMIT, ROLLBACK)
-- stays in database.py, which is the transaction.

-- name: create_migrations_table
-- The runner's own record of applied migrations (created before the first migration can run).
CREATE TABLE IF NOT EXISTS schema_migrations (
  version integer PRIMARY KEY,
  name text NOT NULL,
  checksum text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: lock_migrations
-- Session-level advisory lock: concurrent starts take turns. Parameters: lock key.
SELECT pg_advisory_lock(%s);

-- name: unlock_migrations
-- Parameters: lock key.
SELECT pg_advisory_unlock(%s);

-- name: applied_migrations
SELECT version, checksum FROM schema_migrations;

-- name: record_migration
-- Parameters: version, name, checksum.
INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s);

-- name: schema_version
-- The newest applied migration (0 when none).
SELECT coalesce(max(version), 0) FROM schema_migrations;

-- name: server_version
SHOW server_version;

-- name: database_exists
-- Parameters: database name.
SELECT 1 FROM pg_database WHERE datname = %s;

-- name: create_database
-- A template: {name} is the database's identifier (DDL takes no parameters).
CREATE DATABASE {name};

-- name: async_commit
-- A condition, not a statement (database.ASYNC_COMMIT): in a WHERE clause it makes the
-- statement's own transaction commit asynchronously (set_config(..., true) is SET LOCAL from
-- inside the statement: no round trip, no leak into later transactions of a pooled connection).
-- An uncorrelated subquery, so it runs once per statement, not once per row.
(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL

-- name: batch_flush
-- Waits for every statement a batch sent before it (Database.batch: a Sync would commit).
SELECT 1;
