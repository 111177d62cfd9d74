-- Inlet PostgreSQL schema, version 10: a delivery whose route's transform failed is dead-lettered
-- with the reason 'transform_failed' (routes' `transform`, docs/routing.md). SQLite has no CHECK
-- on the reason, so it needs no migration. Adding the CHECK reads the table once (nothing is
-- rewritten).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_dead_letter_reason_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_dead_letter_reason_check
    CHECK (dead_letter_reason IN ('permanent_4xx', 'retries_exhausted', 'unknown_destination', 'transform_failed'));
