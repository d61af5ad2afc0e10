-- 0022: a new day's partition is made as a table of its own, then attached to `events`
-- (ensure_events_partition). ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on `events`,
-- which batches in flight and stats questions do not hold it back from. CREATE TABLE …
-- PARTITION OF took ACCESS EXCLUSIVE: at each new day it waited for every batch and
-- question open on `events` (up to its 5 s lock timeout, then the batch was retried), and
-- every batch and question after it waited for it. The partitions it makes are the same
-- (pg_dump shows no difference).
--
-- Locks: none but the function's replacement. Consumers of the previous release call it
-- too, and get the new way at once.
CREATE OR REPLACE FUNCTION ensure_events_partition(d date) RETURNS void
LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
DECLARE
    part text := format('events_%s', to_char(d, 'YYYYMMDD'));
    time_index regclass;
BEGIN
    IF to_regclass(part) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM dropped_days WHERE day = d)
    THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('events partitions'));
    -- Checked under the lock: retention may have dropped the day since the line above.
    IF EXISTS (SELECT 1 FROM dropped_days WHERE day = d) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('day %s was dropped by retention; events for it are refused', d);
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
        'INCLUDING STORAGE INCLUDING COMPRESSION)', part);
    -- Another consumer may have made it while this one waited for the lock.
    IF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = part::regclass) THEN
        EXECUTE format(
            'ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, d, d + 1);
    END IF;
    -- The consumer summarizes the new ranges (consumer/brin_ranges.py), not autovacuum.
    SELECT i.indexrelid::regclass INTO time_index
    FROM pg_index AS i
    JOIN pg_inherits AS h ON h.inhrelid = i.indexrelid AND h.inhparent = 'events_time'::regclass
    WHERE i.indrelid = part::regclass;
    EXECUTE format('ALTER INDEX %s SET (autosummarize = off)', time_index);
END;
$$;
