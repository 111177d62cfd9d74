-- Inlet worker schema, version 11: a bulk replay's dry run is kept, so its confirmation replays
-- exactly what was previewed (issue #16). The token is random and only ever known from this
-- table (kept in the store, not signed with a process key: any worker serving the API against
-- the same database can check it). A preview is bound to its filter, its count and the newest
-- dead letter it saw (updated_at_ms): dead letters arriving later are not part of it. Expired
-- rows are removed when a new preview is taken.
CREATE TABLE bulk_replay_previews (
    token                TEXT    PRIMARY KEY,
    actor                TEXT    NOT NULL,
    filter_json          TEXT    NOT NULL,
    total                INTEGER NOT NULL,
    max_updated_at_ms    INTEGER,
    created_at_ms        INTEGER NOT NULL,
    expires_at_ms        INTEGER NOT NULL
);
