-- Inlet PostgreSQL schema, version 7: the columns of schemas/sql/0016_event_ids_and_backups.sql,
-- so that both schemas keep the same tables and columns and `copy-store` carries them over.
-- PostgreSQL gives event ids from its identity and is backed up with its own tools: the worker
-- does not use them here.
ALTER TABLE store_identity ADD COLUMN event_ids_stream_created_ms BIGINT;
ALTER TABLE store_identity ADD COLUMN event_ids_offset BIGINT;
ALTER TABLE store_identity ADD COLUMN backup_taken_at_ms BIGINT;
ALTER TABLE store_identity ADD COLUMN backup_replay_from_sequence BIGINT;
