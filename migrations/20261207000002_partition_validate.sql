-- no-transaction
-- Partitioning interaction_logs by time, step 2 of 3: every row checked against the bound of
-- step 1. VALIDATE CONSTRAINT reads the whole table under a SHARE UPDATE EXCLUSIVE lock, which
-- lets inserts, updates and reads go on meanwhile; outside a transaction, so that no stronger
-- lock of another step is held while it reads.
SET lock_timeout = '10s';
ALTER TABLE interaction_logs VALIDATE CONSTRAINT interaction_logs_legacy_bound;
RESET lock_timeout;
