-- Inlet worker schema, version 1.
-- One row per (source, provider event id): the dedup key that outlives JetStream's window.

CREATE TABLE events (
    id               INTEGER PRIMARY KEY,
    source           TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    id_origin        TEXT    NOT NULL,
    event_type       TEXT,
    scheme           TEXT    NOT NULL,
    secret_index     INTEGER NOT NULL,
    received_at_ms   INTEGER NOT NULL,
    recorded_at_ms   INTEGER NOT NULL,
    stream_sequence  INTEGER NOT NULL,
    content_type     TEXT,
    headers_json     TEXT    NOT NULL,
    body             BLOB    NOT NULL,
    body_sha256      TEXT    NOT NULL,
    -- 'routed' (has deliveries) or 'unrouted' (no route matched: kept, visible, not dropped).
    route_status     TEXT    NOT NULL CHECK (route_status IN ('routed', 'unrouted')),
    duplicates       INTEGER NOT NULL DEFAULT 0,
    -- Same (source, event id) seen again with a different body: counted, never merged.
    conflicts        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (source, event_id)
);
CREATE INDEX events_received_at ON events (received_at_ms);
CREATE INDEX events_type ON events (source, event_type);

CREATE TABLE deliveries (
    id                  TEXT    PRIMARY KEY,
    event_rowid         INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    destination         TEXT    NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'dead_lettered')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    next_attempt_at_ms  INTEGER,
    delivered_at_ms     INTEGER,
    last_status_code    INTEGER,
    last_error          TEXT,
    dead_letter_reason  TEXT,
    UNIQUE (event_rowid, destination)
);
CREATE INDEX deliveries_status ON deliveries (status, destination);

CREATE TABLE attempts (
    id                INTEGER PRIMARY KEY,
    delivery_id       TEXT    NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt           INTEGER NOT NULL,
    started_at_ms     INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    outcome           TEXT    NOT NULL CHECK (outcome IN ('delivered', 'transient', 'permanent')),
    status_code       INTEGER,
    error             TEXT,
    response_snippet  TEXT,
    UNIQUE (delivery_id, attempt)
);
