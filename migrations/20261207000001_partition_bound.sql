-- Partitioning interaction_logs by time, step 1 of 3: the bound of the table as it is.
--
-- The table becomes the first partition of a partitioned interaction_logs (step 3) without its
-- rows being rewritten. Attaching it is instant only if PostgreSQL can prove, from a validated
-- CHECK, that every row lies below the partition's upper bound; that bound is set here, two
-- days after the start of today (UTC), far beyond any event's time (the service clamps future
-- times to a few seconds ahead). Adding the constraint NOT VALID takes a brief lock and reads no
-- row; step 2 validates it without blocking writes.
CREATE TABLE interaction_logs_upgrade (legacy_until TIMESTAMP NOT NULL);

DO $$
DECLARE
    bound TIMESTAMP := date_trunc('day', now() AT TIME ZONE 'UTC') + INTERVAL '2 days';
BEGIN
    INSERT INTO interaction_logs_upgrade VALUES (bound);
    EXECUTE format(
        'ALTER TABLE interaction_logs ADD CONSTRAINT interaction_logs_legacy_bound CHECK (ts < %L) NOT VALID',
        bound);
END
$$;
