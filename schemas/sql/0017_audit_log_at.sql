-- Inlet worker schema, version 17: the audit log by time, for the console's and the API's time
-- range on it (issue #16): a bounded range is read through this index instead of scanning the
-- whole log (EXPLAIN QUERY PLAN: SCAN a -> SEARCH a USING INDEX audit_log_at).
CREATE INDEX audit_log_at ON audit_log (at_ms);
