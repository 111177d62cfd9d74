-- Inlet worker schema (PostgreSQL), version 11: per-key ordering (`routes[].ordering_key`); see
-- schemas/sql/0020_ordering.sql for the columns. Here ordering_position comes from
-- deliveries_ordering_position, drawn by the recording transaction while it holds the
-- destination's ordering lock (shared; a claim takes it exclusively), in stream order within a
-- batch: so a claim never sees a later position committed while an earlier one is still to
-- come, whichever worker records.
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN ordering_position BIGINT;
ALTER TABLE deliveries ADD COLUMN ordering_blocks BOOLEAN NOT NULL DEFAULT false;
CREATE SEQUENCE deliveries_ordering_position;
CREATE INDEX deliveries_ordering_pending ON deliveries (destination, ordering_key, ordering_position, lease_until_ms)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
CREATE INDEX deliveries_ordering_blocked ON deliveries (destination, ordering_key, ordering_position)
    WHERE status = 'dead_lettered' AND ordering_blocks;
