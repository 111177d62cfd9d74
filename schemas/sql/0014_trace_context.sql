-- Inlet worker schema, version 14: the W3C trace context of the span that recorded each event
-- (issue #19), when traces are on (`[telemetry.traces]`); NULL otherwise. Every delivery attempt
-- of the event, retries and replays included, is a child span of it, so one trace holds the
-- event's whole story across restarts and workers.
ALTER TABLE events ADD COLUMN trace_context TEXT;
