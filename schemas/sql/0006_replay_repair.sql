-- Inlet worker schema, version 6: replays whose task JetStream has not confirmed yet (the
-- repair loop publishes them again with the same message id).
CREATE INDEX deliveries_replay_unconfirmed ON deliveries (id) WHERE replay_enqueued = 0;
