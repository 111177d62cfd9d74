-- Inlet worker schema, version 15 (issue #16): a dead letter can be dismissed, and an event can
-- be replayed to another destination.
--
--   * status 'dismissed': a dead letter an operator resolved without delivering it (who, when,
--     an optional note). It is no dead letter any more and is never attempted again; pruned like
--     a delivered delivery; a replay can still take it back.
--   * replay_of, created_by: a delivery made by replaying an event to a destination (by an
--     operator, not by the routes) says which delivery it replays (none when the event was
--     replayed as such) and who asked; its id is `dlv_<event>_<destination>~r<n>`. There may
--     now be several deliveries of one event to one destination, so UNIQUE (event_rowid,
--     destination) goes (a routed delivery's id is made of both, so routed ones stay unique),
--     and deliveries_event serves the lookups by event (and the cascade from events).
--
-- SQLite cannot change a CHECK constraint or drop a UNIQUE one in place: the table is rebuilt as
-- https://www.sqlite.org/lang_altertable.html#otheralter says (the migration runs with foreign
-- keys off and checks them before committing, see store/migrate.rs). Every row keeps its rowid
-- (the API's delivery cursors and the newest-first dead-letter order); the counters are not
-- touched (the copy fires no trigger, and dropping the old table fires none either); attempts
-- keep pointing at their deliveries by id. This reads and writes the whole table once.
CREATE TABLE deliveries_v15 (
    id                  TEXT    PRIMARY KEY,
    event_rowid         INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    destination         TEXT    NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'dead_lettered', 'dismissed')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    next_attempt_at_ms  INTEGER,
    delivered_at_ms     INTEGER,
    last_status_code    INTEGER,
    last_error          TEXT,
    dead_letter_reason  TEXT,
    replays             INTEGER NOT NULL DEFAULT 0,
    replay_enqueued     INTEGER NOT NULL DEFAULT 1,
    attempt_base        INTEGER NOT NULL DEFAULT 0,
    lease_token         INTEGER NOT NULL DEFAULT 0,
    lease_until_ms      INTEGER,
    replay_of           TEXT,
    created_by          TEXT,
    dismissed_by        TEXT,
    dismissed_at_ms     INTEGER,
    dismiss_note        TEXT
);
INSERT INTO deliveries_v15 (rowid, id, event_rowid, destination, status, attempts, created_at_ms, updated_at_ms,
                            next_attempt_at_ms, delivered_at_ms, last_status_code, last_error, dead_letter_reason,
                            replays, replay_enqueued, attempt_base, lease_token, lease_until_ms)
    SELECT rowid, id, event_rowid, destination, status, attempts, created_at_ms, updated_at_ms,
           next_attempt_at_ms, delivered_at_ms, last_status_code, last_error, dead_letter_reason,
           replays, replay_enqueued, attempt_base, lease_token, lease_until_ms
    FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v15 RENAME TO deliveries;

CREATE INDEX deliveries_event ON deliveries (event_rowid);
CREATE INDEX deliveries_status ON deliveries (status, destination);
CREATE INDEX deliveries_status_order ON deliveries (status);
CREATE INDEX deliveries_replay_unconfirmed ON deliveries (id) WHERE replay_enqueued = 0;
CREATE INDEX deliveries_due ON deliveries (destination, attempts > attempt_base, next_attempt_at_ms)
    WHERE status = 'pending';

CREATE TRIGGER delivery_counts_insert AFTER INSERT ON deliveries BEGIN
    INSERT INTO delivery_counts (destination, status, n) VALUES (new.destination, new.status, 1)
        ON CONFLICT (destination, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER delivery_counts_delete AFTER DELETE ON deliveries BEGIN
    UPDATE delivery_counts SET n = n - 1 WHERE destination = old.destination AND status = old.status;
END;
CREATE TRIGGER delivery_counts_update AFTER UPDATE OF status ON deliveries WHEN old.status <> new.status BEGIN
    UPDATE delivery_counts SET n = n - 1 WHERE destination = old.destination AND status = old.status;
    INSERT INTO delivery_counts (destination, status, n) VALUES (new.destination, new.status, 1)
        ON CONFLICT (destination, status) DO UPDATE SET n = n + 1;
END;
