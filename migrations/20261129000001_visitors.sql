-- Visitors before they log in: an event names a user or an anonymous visitor (never neither).
-- Known users' rows keep the seed's columns and foreign keys; a visitor's rows carry the
-- client's anonymous id, and gain a user_id once the visitor is identified (POST /api/identify).
-- On a large table the check scans every row once, under the migration's lock.
ALTER TABLE interaction_logs
    ALTER COLUMN user_id DROP NOT NULL,
    ADD COLUMN anonymous_id TEXT,
    ADD CONSTRAINT interaction_logs_actor_check CHECK (user_id IS NOT NULL OR anonymous_id IS NOT NULL);

-- A visitor's history, as the seed's query reads a user's: WHERE anonymous_id = ? ORDER BY ts DESC.
CREATE INDEX interaction_logs_anonymous_ts_idx ON interaction_logs (anonymous_id, ts DESC)
    WHERE anonymous_id IS NOT NULL;

-- Which user each identified visitor became: the first identification wins, so a visitor's
-- events (those stored before it, and any arriving late) all go to one user.
CREATE TABLE visitor_identities (
    anonymous_id  TEXT PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users(id),
    identified_at TIMESTAMP NOT NULL
);
