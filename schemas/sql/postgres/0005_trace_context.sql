-- Inlet PostgreSQL schema, version 5: the trace context of the span that recorded each event
-- (see schemas/sql/0014_trace_context.sql).
ALTER TABLE events ADD COLUMN trace_context TEXT;
