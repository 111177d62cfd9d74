-- Search by body content (issue #16, worker/src/store/search.rs).
--
-- event_search: the searchable text of each event whose body is UTF-8 text (its first 64 KiB,
-- decided and written by the worker when it records the event), deleted with its event.
-- event_search_fts: an FTS5 index of that text by trigrams (a term is found as a substring,
-- case-insensitively), its content read from event_search and kept in step by the triggers.
-- Events stored before this migration are indexed by the worker right after this SQL, in the
-- same transaction.
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

CREATE TRIGGER event_search_indexed AFTER INSERT ON event_search BEGIN
    INSERT INTO event_search_fts (rowid, body_text) VALUES (new.event_rowid, new.body_text);
END;

-- Also when the row goes with its event (the foreign key's cascade fires it).
CREATE TRIGGER event_search_unindexed AFTER DELETE ON event_search BEGIN
    INSERT INTO event_search_fts (event_search_fts, rowid, body_text) VALUES ('delete', old.event_rowid, old.body_text);
END;
