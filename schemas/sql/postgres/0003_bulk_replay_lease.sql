-- Inlet PostgreSQL schema, version 3: a running bulk replay holds a lease, renewed by the worker
-- running it (see schemas/sql/0012_bulk_replay_lease.sql).
ALTER TABLE bulk_replays ADD COLUMN lease_until_ms BIGINT;
