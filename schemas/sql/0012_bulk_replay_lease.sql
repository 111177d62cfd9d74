-- Inlet worker schema, version 12: a running bulk replay holds a lease (issue #15). The worker
-- running the job renews it with every progress write and on a timer while the job waits, so
-- a job whose worker died is recognised by its lapsed lease and closed as cancelled by the
-- worker holding the periodic jobs, and a job cancelled by another worker (its status set in
-- this row) is noticed by its runner at its next write. NULL once the job ended; a job left
-- running by a worker from before this version has none, and counts as lapsed.
ALTER TABLE bulk_replays ADD COLUMN lease_until_ms INTEGER;
