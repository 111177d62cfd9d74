-- Inlet worker schema (PostgreSQL), version 12: the routing config each event was routed with,
-- and which one a replayed delivery's attempts use; see schemas/sql/0021_config_versions.sql.
CREATE TABLE config_versions (
    version TEXT PRIMARY KEY,
    routes_json TEXT NOT NULL,
    first_used_at_ms BIGINT NOT NULL
);
ALTER TABLE events ADD COLUMN config_version TEXT;
ALTER TABLE deliveries ADD COLUMN config_version TEXT;
