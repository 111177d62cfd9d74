-- Inlet worker schema, version 20: per-key ordering (`routes[].ordering_key`).
--   * ordering_key: the value the route's JSON pointer found in the event's body (bounded: a
--     longer one is stored as `sha256:<hex>`); NULL: the delivery is unordered.
--   * ordering_position: its place in the key's order: the event's intake stream sequence
--     (receipt order). NULL when unordered.
--   * ordering_blocks: 1 when, dead-lettered, it holds the key's later deliveries
--     (`ordering_on_dead_letter = "block"`) until it is replayed and delivered, or dismissed.
-- A delivery of (destination, key) is claimed only while no earlier one of the same key is
-- pending (or a blocking dead letter) and no other one of the key is in flight: the two partial
-- indexes answer those questions from the unfinished deliveries only.
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN ordering_position INTEGER;
ALTER TABLE deliveries ADD COLUMN ordering_blocks INTEGER NOT NULL DEFAULT 0;
CREATE INDEX deliveries_ordering_pending ON deliveries (destination, ordering_key, ordering_position, lease_until_ms)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
CREATE INDEX deliveries_ordering_blocked ON deliveries (destination, ordering_key, ordering_position)
    WHERE status = 'dead_lettered' AND ordering_blocks = 1;
