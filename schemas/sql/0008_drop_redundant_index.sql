-- Inlet worker schema, version 8: drop deliveries_event. UNIQUE (event_rowid, destination)
-- already serves every lookup by event_rowid (it is that index's first column), and each
-- delivery insert paid for one more B-tree in the write path.
DROP INDEX deliveries_event;
