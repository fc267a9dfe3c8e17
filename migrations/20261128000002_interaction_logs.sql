CREATE TYPE event_type_enum AS ENUM ('view', 'click', 'add_to_cart', 'purchase', 'rate');

-- The seed's table, as given, plus event_id: the idempotency key that makes every write retryable.
CREATE TABLE interaction_logs (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    asin        TEXT NOT NULL REFERENCES items(asin),
    event_type  event_type_enum NOT NULL,
    ts          TIMESTAMP NOT NULL DEFAULT NOW(),
    metadata    JSONB,
    event_id    UUID NOT NULL DEFAULT gen_random_uuid(),
    CONSTRAINT interaction_logs_event_id_key UNIQUE (event_id)
);

-- The seed's verification query: WHERE user_id = ? ORDER BY ts DESC.
CREATE INDEX interaction_logs_user_ts_idx ON interaction_logs (user_id, ts DESC);
