-- Partitioning interaction_logs by time, step 3 of 3: the table as it was becomes the partition
-- interaction_logs_legacy, below the bound of step 1, of a new interaction_logs partitioned by
-- range on ts. Nothing here reads or writes a row: the renames are catalogue changes, the indexes
-- of the new table are created on no rows and matched to the existing ones of the old table, its
-- foreign keys matched to the old table's, and the attach trusts the validated CHECK. The locks
-- are held for milliseconds.
--
-- The seed's columns, foreign keys and query are unchanged. Each partition has its own primary
-- key (id, from the one sequence) and its own UNIQUE (event_id), which PostgreSQL cannot declare
-- on a partitioned table without the partition key; an event stored twice across partitions is
-- kept out by interaction_log_ids (docs/ARCHITECTURE.md, "Exactly once across partitions").
-- The writer makes the other partitions (src/writer/partitions.rs).

-- The exclusive locks are waited for at most ten seconds (a long query on the table): the start
-- then fails, and the next start tries again.
SET LOCAL lock_timeout = '10s';

ALTER TABLE interaction_logs RENAME TO interaction_logs_legacy;
ALTER INDEX interaction_logs_user_ts_idx RENAME TO interaction_logs_legacy_user_ts_idx;
ALTER INDEX interaction_logs_anonymous_ts_idx RENAME TO interaction_logs_legacy_anonymous_ts_idx;

CREATE TABLE interaction_logs (
    id           BIGINT NOT NULL DEFAULT nextval('interaction_logs_id_seq'),
    user_id      BIGINT CONSTRAINT interaction_logs_user_fk REFERENCES users(id),
    asin         TEXT NOT NULL CONSTRAINT interaction_logs_asin_fk REFERENCES items(asin),
    event_type   event_type_enum NOT NULL,
    ts           TIMESTAMP NOT NULL DEFAULT NOW(),
    metadata     JSONB,
    event_id     UUID NOT NULL DEFAULT gen_random_uuid(),
    anonymous_id TEXT,
    CONSTRAINT interaction_logs_actor_check CHECK (user_id IS NOT NULL OR anonymous_id IS NOT NULL)
) PARTITION BY RANGE (ts);

-- The sequence outlives the legacy partition, which retention may drop one day.
ALTER SEQUENCE interaction_logs_id_seq OWNED BY interaction_logs.id;

-- The seed's query, WHERE user_id = ? ORDER BY ts DESC, and a visitor's.
CREATE INDEX interaction_logs_user_ts_idx ON interaction_logs (user_id, ts DESC);
CREATE INDEX interaction_logs_anonymous_ts_idx ON interaction_logs (anonymous_id, ts DESC)
    WHERE anonymous_id IS NOT NULL;

-- A table with rows becomes the first partition; an empty one (a new installation) is dropped,
-- and the writer makes every partition on the grid of --partition-interval. Nothing can insert
-- meanwhile: the rename above holds the table's exclusive lock until this transaction ends.
DO $$
DECLARE
    bound TIMESTAMP := (SELECT legacy_until FROM interaction_logs_upgrade);
BEGIN
    IF EXISTS (SELECT 1 FROM interaction_logs_legacy) THEN
        EXECUTE format(
            'ALTER TABLE interaction_logs ATTACH PARTITION interaction_logs_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
            bound);
    ELSE
        DROP TABLE interaction_logs_legacy;
    END IF;
END
$$;
DROP TABLE interaction_logs_upgrade;

-- The ids of events that a client's retry could store in another partition than the first
-- time: those stored within --dedup-skew of their partition's bounds, and those without a time
-- of the client's own (docs/ARCHITECTURE.md). Pruned by the writer's partition maintenance.
CREATE TABLE interaction_log_ids (
    event_id UUID PRIMARY KEY,
    ts       TIMESTAMP NOT NULL
);
CREATE INDEX interaction_log_ids_ts_idx ON interaction_log_ids (ts);
