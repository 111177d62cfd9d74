-- Search by body content (issue #16, worker/src/store/search.rs): the twin of SQLite's
-- 0018_event_search.sql.
--
-- event_search: the searchable text of each event whose body is UTF-8 text (its first 64 KiB,
-- decided and written by the worker when it records the event), deleted with its event.
-- event_search_text_trgm: a pg_trgm GIN index, so that `body_text ILIKE '%term%'` (a term of
-- three characters or more) is answered from the index. pg_trgm ships with PostgreSQL (contrib)
-- and is a trusted extension (PostgreSQL 13 and later): the database's owner may create it.
-- Events stored before this migration are indexed by the worker right after this SQL, in the
-- same transaction.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE event_search (
    event_rowid BIGINT PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    body_text   TEXT   NOT NULL
);

CREATE INDEX event_search_text_trgm ON event_search USING gin (body_text gin_trgm_ops);
