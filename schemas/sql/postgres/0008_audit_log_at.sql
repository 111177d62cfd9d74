-- Inlet PostgreSQL schema, version 8: the audit log by time, for the console's and the API's
-- time range on it (issue #16), as SQLite's version 17.
CREATE INDEX audit_log_at ON audit_log (at_ms);
