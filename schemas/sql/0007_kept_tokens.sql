-- Inlet worker schema, version 7: a provider token kept to re-check organisation membership,
-- sealed with AES-256-GCM (`v1.{key_id}.{…}`, bound to its row), and when a session is due
-- for that re-check.
ALTER TABLE oauth_accounts ADD COLUMN token_sealed TEXT;
ALTER TABLE sessions ADD COLUMN oauth_account_id INTEGER REFERENCES oauth_accounts (id) ON DELETE CASCADE;
ALTER TABLE sessions ADD COLUMN recheck_at_ms INTEGER;
