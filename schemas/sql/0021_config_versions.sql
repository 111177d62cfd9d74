-- Inlet worker schema, version 21: the routing config each event was routed with, and which one
-- a replayed delivery's attempts use (docs/routing.md, "Replays and config versions").
--   * config_versions: one row per routing config a worker started with: its version (the
--     SHA-256, hex, of the canonical JSON of `[[routes]]`: sources, patterns, filters,
--     destinations' names, transforms, ordering; nothing secret) and that JSON, so a replay "as
--     received" can compile the transform the event was routed with. Written once per version
--     (several workers with the same config write one row). Kept, not pruned: a row is a few
--     KiB and there is one per config change.
--   * events.config_version: the version the event was routed with. NULL: recorded before this
--     migration, or by a worker of the version before it during a rolling upgrade.
--   * deliveries.config_version: NULL: attempts use the worker's current config (every routed
--     delivery, and replays "current"); set: a replay "as received" whose attempts use that
--     version's transform.
CREATE TABLE config_versions (
    version TEXT PRIMARY KEY,
    routes_json TEXT NOT NULL,
    first_used_at_ms INTEGER NOT NULL
);
ALTER TABLE events ADD COLUMN config_version TEXT;
ALTER TABLE deliveries ADD COLUMN config_version TEXT;
