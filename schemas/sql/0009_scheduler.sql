-- Inlet worker schema, version 9: the store schedules deliveries.
--
-- A pending delivery is due at next_attempt_at_ms (the due-time index below is what the
-- scheduler reads). Starting an attempt claims it: lease_token goes up by one (the fencing
-- token) and lease_until_ms says how long the claim holds. An attempt's result is recorded only
-- while its token is still the delivery's, so an owner whose lease expired and was taken over
-- cannot overwrite the newer attempt's result. A pending delivery past due whose lease expired
-- (or that has none) is claimed again: a lost wake-up or a dead owner delays it, never drops it.
ALTER TABLE deliveries ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN lease_until_ms INTEGER;
UPDATE deliveries SET next_attempt_at_ms = coalesce(next_attempt_at_ms, updated_at_ms) WHERE status = 'pending';
-- First attempts (attempts = attempt_base: new or replayed) and retries are claimed separately,
-- so a retry backlog never sits in front of fresh events.
CREATE INDEX deliveries_due ON deliveries (destination, attempts > attempt_base, next_attempt_at_ms)
    WHERE status = 'pending';

-- Which database this is: the worker's lease in NATS names it, so a restart of the same
-- database takes its own lease over at once, and a second database on the same NATS is refused.
CREATE TABLE store_identity (
    id  TEXT NOT NULL
);
INSERT INTO store_identity (id) VALUES (lower(hex(randomblob(16))));

-- Counts kept up to date by triggers, so `counts` and the destinations view read a few rows
-- instead of scanning every event and delivery kept for the retention period.
CREATE TABLE event_counts (
    route_status  TEXT    PRIMARY KEY,
    n             INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO event_counts (route_status, n) SELECT route_status, count(*) FROM events GROUP BY route_status;

CREATE TABLE delivery_counts (
    destination  TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (destination, status)
) WITHOUT ROWID;
INSERT INTO delivery_counts (destination, status, n)
    SELECT destination, status, count(*) FROM deliveries GROUP BY destination, status;

CREATE TRIGGER event_counts_insert AFTER INSERT ON events BEGIN
    INSERT INTO event_counts (route_status, n) VALUES (new.route_status, 1)
        ON CONFLICT (route_status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER event_counts_delete AFTER DELETE ON events BEGIN
    UPDATE event_counts SET n = n - 1 WHERE route_status = old.route_status;
END;
CREATE TRIGGER delivery_counts_insert AFTER INSERT ON deliveries BEGIN
    INSERT INTO delivery_counts (destination, status, n) VALUES (new.destination, new.status, 1)
        ON CONFLICT (destination, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER delivery_counts_delete AFTER DELETE ON deliveries BEGIN
    UPDATE delivery_counts SET n = n - 1 WHERE destination = old.destination AND status = old.status;
END;
CREATE TRIGGER delivery_counts_update AFTER UPDATE OF status ON deliveries WHEN old.status <> new.status BEGIN
    UPDATE delivery_counts SET n = n - 1 WHERE destination = old.destination AND status = old.status;
    INSERT INTO delivery_counts (destination, status, n) VALUES (new.destination, new.status, 1)
        ON CONFLICT (destination, status) DO UPDATE SET n = n + 1;
END;
