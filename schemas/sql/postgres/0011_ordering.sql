-- Inlet worker schema (PostgreSQL), version 11: per-key ordering (`routes[].ordering_key`); see
-- schemas/sql/0020_ordering.sql for the columns (ordering_position: the event's intake stream
-- sequence) and the indexes.
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN ordering_position BIGINT;
ALTER TABLE deliveries ADD COLUMN ordering_blocks BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX deliveries_ordering_pending ON deliveries (destination, ordering_key, ordering_position, lease_until_ms)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
CREATE INDEX deliveries_ordering_blocked ON deliveries (destination, ordering_key, ordering_position)
    WHERE status = 'dead_lettered' AND ordering_blocks;
