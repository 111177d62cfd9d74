-- Inlet PostgreSQL schema, version 2: a bulk replay's dry run is kept, so its confirmation
-- replays exactly what was previewed (see schemas/sql/0011_bulk_replay_previews.sql).
CREATE TABLE bulk_replay_previews (
    token                TEXT    PRIMARY KEY,
    actor                TEXT    NOT NULL,
    filter_json          TEXT    NOT NULL,
    total                BIGINT  NOT NULL,
    max_updated_at_ms    BIGINT,
    created_at_ms        BIGINT  NOT NULL,
    expires_at_ms        BIGINT  NOT NULL
);
