-- Inlet PostgreSQL schema, version 4: the trace context of the span that recorded each event
-- (see schemas/sql/0013_trace_context.sql).
ALTER TABLE events ADD COLUMN trace_context TEXT;
