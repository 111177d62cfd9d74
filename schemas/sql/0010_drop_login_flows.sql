-- Inlet worker schema, version 10: drop login_flows. A login in progress now travels sealed
-- (AES-256-GCM, a key drawn at startup) in its `__Host-` login cookie, so an anonymous
-- `GET /auth/login` writes nothing; a flow stored when this migration runs was at most ten
-- minutes from expiring, and its browser starts the sign-in again.
DROP TABLE login_flows;
