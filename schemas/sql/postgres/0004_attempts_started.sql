-- Inlet PostgreSQL schema, version 4: attempts by start time, for the console's activity charts
-- (issue #16), which count attempts per minute over a chosen range without scanning them all.
CREATE INDEX attempts_started ON attempts (started_at_ms);
