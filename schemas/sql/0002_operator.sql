-- Inlet worker schema, version 2: the operator plane (console users, sessions, API tokens,
-- replays and their audit trail).

-- Replays: how many times an operator re-queued this delivery, whether the latest replay's task
-- was acknowledged by JetStream, and the attempt count when it was replayed (so the delivery
-- loop can give a replayed delivery a fresh retry schedule: index = attempts - attempt_base).
ALTER TABLE deliveries ADD COLUMN replays INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN replay_enqueued INTEGER NOT NULL DEFAULT 1;
ALTER TABLE deliveries ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
CREATE INDEX deliveries_event ON deliveries (event_rowid);

-- Inlet's own accounts. A social/OIDC identity is linked to one (oauth_accounts), not the same thing.
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    email          TEXT    NOT NULL UNIQUE,
    name           TEXT,
    role           TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at_ms  INTEGER NOT NULL,
    last_login_ms  INTEGER
);

CREATE TABLE oauth_accounts (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider       TEXT    NOT NULL,
    subject        TEXT    NOT NULL,
    email          TEXT,
    created_at_ms  INTEGER NOT NULL,
    UNIQUE (provider, subject)
);

-- One row per login in progress: state, nonce and PKCE verifier stay server-side, keyed by the
-- SHA-256 of the random value in the short-lived login cookie. Used once (deleted on callback).
CREATE TABLE login_flows (
    id_hash        TEXT    PRIMARY KEY,
    state          TEXT    NOT NULL,
    nonce          TEXT    NOT NULL,
    pkce_verifier  TEXT    NOT NULL,
    return_to      TEXT    NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);

-- Server-side sessions, keyed by the SHA-256 of the cookie value (the cookie alone is useless
-- once the row is gone: logout deletes it).
CREATE TABLE sessions (
    id_hash        TEXT    PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token     TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at_ms);

-- Machine access: only the SHA-256 of a token is kept.
CREATE TABLE api_tokens (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL,
    token_hash     TEXT    NOT NULL UNIQUE,
    role           TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_by     TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    revoked_at_ms  INTEGER,
    last_used_ms   INTEGER
);

CREATE TABLE bulk_replays (
    id              INTEGER PRIMARY KEY,
    actor           TEXT    NOT NULL,
    filter_json     TEXT    NOT NULL,
    rate_per_second INTEGER NOT NULL,
    total           INTEGER NOT NULL,
    done            INTEGER NOT NULL DEFAULT 0,
    enqueued        INTEGER NOT NULL DEFAULT 0,
    status          TEXT    NOT NULL CHECK (status IN ('running', 'finished', 'cancelled', 'failed')),
    created_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER
);

-- Who did what, when, to what, how many.
CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    target   TEXT    NOT NULL,
    count    INTEGER NOT NULL DEFAULT 1,
    detail   TEXT
);
