-- Inlet worker schema, version 3: a login in progress remembers which provider it went to, so
-- a callback is only accepted from that provider.
ALTER TABLE login_flows ADD COLUMN provider TEXT NOT NULL DEFAULT 'oidc';
