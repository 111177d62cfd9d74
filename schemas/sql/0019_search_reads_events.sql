-- Inlet worker schema, version 19: the search index reads the events' bodies themselves.
--
-- Version 18 kept a second copy of each searchable body (event_search, up to 64 KiB per event)
-- written in the transaction that records the event: that copy cost recording about as much
-- as the rest of it (docs/benchmarks.md). Now nothing is written for search when an event is
-- recorded; the writer reads new events' bodies between its groups and indexes their searchable
-- text (the worker's rule, store/search.rs) into event_text_fts, an FTS5 trigram index that
-- keeps no copy of the text (contentless, deletable by rowid = events.id). Snippets and the
-- events not indexed yet are read from events.body.
--
-- event_text_fts_progress: every event up to indexed_through is in the index (when searchable),
-- none after it. It starts at 0: the writer indexes the events already stored, oldest first,
-- while searches read the ones it has not reached directly.
--
-- The trigger takes a pruned event out of the index; an event never indexed (not searchable,
-- or not reached yet) is not in it, and deleting an absent rowid from a contentless-delete
-- table changes nothing.
--
-- event_search, event_search_fts and their trigger stay until the next schema change: a
-- version-18 worker still running beside this one (a rolling upgrade) uses them. Nothing of
-- this version reads or writes them; their rows go with their events at retention.
CREATE VIRTUAL TABLE event_text_fts USING fts5 (
    body_text,
    content = '',
    contentless_delete = 1,
    tokenize = 'trigram'
);

CREATE TABLE event_text_fts_progress (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_through  INTEGER NOT NULL
);
INSERT INTO event_text_fts_progress (id, indexed_through) VALUES (1, 0);

CREATE TRIGGER event_text_unindexed AFTER DELETE ON events
WHEN old.id <= (SELECT indexed_through FROM event_text_fts_progress)
BEGIN
    DELETE FROM event_text_fts WHERE rowid = old.id;
END;
