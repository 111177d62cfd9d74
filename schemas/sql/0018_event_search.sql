-- Search by body content (issue #16, worker/src/store/search.rs).
--
-- event_search: the searchable text of each event whose body is UTF-8 text (its first 64 KiB,
-- decided and written by the worker in the transaction that records the event), deleted with
-- its event.
-- event_search_fts: an FTS5 index of that text by trigrams (a term is found as a substring,
-- case-insensitively), its content read from event_search. Indexing is the costly part, so it
-- is not done when an event is recorded: the writer indexes event_search's new rows, in row
-- order, in small transactions of their own between its groups (store/writer.rs).
-- event_search_fts_progress: how far it got (SQLite only: PostgreSQL indexes as it records).
-- A row not indexed yet leaves nothing in the index to delete when its event goes (the
-- trigger's WHEN); searches read such rows directly.
-- Events stored before this migration get their row right after this SQL, in the same
-- transaction (by the worker, with its rule of what is searchable), and are indexed like new ones.
CREATE TABLE event_search (
    event_rowid INTEGER PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    body_text   TEXT    NOT NULL
);

CREATE VIRTUAL TABLE event_search_fts USING fts5 (
    body_text,
    content = 'event_search',
    content_rowid = 'event_rowid',
    tokenize = 'trigram'
);

CREATE TABLE event_search_fts_progress (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    -- Every event_search row up to this event_rowid is in the index, none after it.
    indexed_through  INTEGER NOT NULL
);
INSERT INTO event_search_fts_progress (id, indexed_through) VALUES (1, 0);

-- Also when the row goes with its event (the foreign key's cascade fires it).
CREATE TRIGGER event_search_unindexed AFTER DELETE ON event_search
WHEN old.event_rowid <= (SELECT indexed_through FROM event_search_fts_progress)
BEGIN
    INSERT INTO event_search_fts (event_search_fts, rowid, body_text) VALUES ('delete', old.event_rowid, old.body_text);
END;
