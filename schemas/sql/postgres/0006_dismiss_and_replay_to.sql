-- Inlet PostgreSQL schema, version 6: a dead letter can be dismissed (status 'dismissed', who,
-- when, an optional note), and an event can be replayed to another destination (a new delivery
-- saying which delivery it replays and who asked; several deliveries of one event to one
-- destination, so UNIQUE (event_rowid, destination) goes and deliveries_event serves lookups by
-- event). See schemas/sql/0015_dismiss_and_replay_to.sql. Adding the CHECK reads the table once
-- (nothing is rewritten); the new columns are NULL.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'delivered', 'dead_lettered', 'dismissed'));
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_rowid_destination_key;
CREATE INDEX deliveries_event ON deliveries (event_rowid);
ALTER TABLE deliveries
    ADD COLUMN replay_of        TEXT,
    ADD COLUMN created_by       TEXT,
    ADD COLUMN dismissed_by     TEXT,
    ADD COLUMN dismissed_at_ms  BIGINT,
    ADD COLUMN dismiss_note     TEXT;
