-- Inlet worker schema, version 4: a login can link a provider account to the signed-in user
-- instead of signing in (the user who asked, checked again when the provider answers).
ALTER TABLE login_flows ADD COLUMN link_user_id INTEGER;
