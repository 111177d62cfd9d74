-- Inlet worker schema, version 16: event row ids follow the intake stream, and a copy made by
-- `inlet-worker backup` says where recording resumes once it is restored.
--
-- A new event's row id is its stream sequence plus `event_ids_offset` (fixed while the store
-- follows one stream, `event_ids_stream_created_ms` being that stream's creation time; a new
-- stream, or a sequence seen twice, starts over above every id given so far). So recording
-- the same messages again — a restored backup catching up from the stream — gives each event
-- the row id, and so the delivery ids, it had before, and no id is ever given to two events.
-- Both NULL until a worker of this version starts on the store.
ALTER TABLE store_identity ADD COLUMN event_ids_stream_created_ms INTEGER;
ALTER TABLE store_identity ADD COLUMN event_ids_offset INTEGER;
-- Set only in a backup's copy: when it was taken, and the first stream sequence it may lack
-- (the recording consumer's ack floor before the copy, plus one). A worker started on a restored
-- copy records the stream again from there, then clears both.
ALTER TABLE store_identity ADD COLUMN backup_taken_at_ms INTEGER;
ALTER TABLE store_identity ADD COLUMN backup_replay_from_sequence INTEGER;
