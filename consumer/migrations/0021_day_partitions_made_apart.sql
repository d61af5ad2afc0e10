-- 0021: a new day's partition is made as a table of its own, with its BRIN index on
-- event_time, and then attached to `events` (ensure_events_partition).
--
-- - ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on `events`, which batches in flight and
--   stats questions do not hold it back from. CREATE TABLE … PARTITION OF took ACCESS
--   EXCLUSIVE: at each new day it waited for every batch and question open on `events` (up to
--   its 5 s lock timeout, then the batch was retried), and every batch and question after it
--   waited for it. The partitions are the same (columns, constraints, indexes and their
--   names, owner, privileges).
-- - The day's BRIN index has `autosummarize` off: the consumer summarizes the new ranges
--   itself (consumer/brin_ranges.py). autosummarize's requests, 256 at a time for the whole
--   server between autovacuum's visits, overflowed at a few thousand events a second, and each
--   refusal was logged with the whole batch statement
--   (docs/decisions/0001-brin-index-on-events.md). The days made before keep the option until
--   a replica's pass turns it off, on each day once it is over and quiet (ALTER INDEX … SET
--   takes ACCESS EXCLUSIVE on the index, which inserts into the day wait for): not here,
--   where every day's index would stay locked until the migration commits, the day being
--   written included. So the day of the upgrade keeps it until it ends.
--
-- Locks: none but the function's replacement. Consumers of the previous release call the new
-- function at once; while only they run, nothing summarizes new ranges but VACUUM, and
-- questions that read a range's edges from raw events read those ranges whole.
CREATE OR REPLACE FUNCTION ensure_events_partition(d date) RETURNS void
LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
DECLARE
    part text := format('events_%s', to_char(d, 'YYYYMMDD'));
    time_index regclass := to_regclass('events_time');
    table_space text;
    index_space text := '';
    adopted regclass;
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
    -- Where PARTITION OF would put them: the tablespaces of events and of events_time, if set.
    SELECT coalesce(' TABLESPACE ' || quote_ident(s.spcname), '') INTO table_space
    FROM pg_class AS c LEFT JOIN pg_tablespace AS s ON s.oid = c.reltablespace
    WHERE c.oid = 'events'::regclass;
    IF time_index IS NOT NULL THEN
        SELECT coalesce(' TABLESPACE ' || quote_ident(s.spcname), '') INTO index_space
        FROM pg_class AS c LEFT JOIN pg_tablespace AS s ON s.oid = c.reltablespace
        WHERE c.oid = time_index;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
        'INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION)%s', part, table_space);
    -- Another consumer may have made it while this one waited for the lock.
    IF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = part::regclass) THEN
        -- The day's part of events_time, as ATTACH would make it but without autosummarize:
        -- the consumer summarizes the new ranges itself (consumer/brin_ranges.py). ATTACH
        -- adopts it, and makes the day's part of the primary key.
        IF time_index IS NOT NULL THEN
            EXECUTE format(
                'CREATE INDEX IF NOT EXISTS %I ON %I USING brin (event_time) '
                'WITH (pages_per_range = 16, autosummarize = off)%s',
                part || '_event_time_idx', part, index_space);
        END IF;
        EXECUTE format(
            'ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, d, d + 1);
        -- Unless an operator changed events_time's definition: then ATTACH made an index of
        -- its own. Keep that one, without autosummarize if it is a BRIN index (no one sees
        -- this day before the commit, so altering it waits for nothing), and drop the one
        -- made above unless another index on events adopted it.
        SELECT h.inhrelid::regclass INTO adopted
        FROM pg_inherits AS h JOIN pg_index AS i ON i.indexrelid = h.inhrelid
        WHERE h.inhparent = time_index AND i.indrelid = part::regclass;
        IF adopted IS DISTINCT FROM to_regclass(part || '_event_time_idx') THEN
            IF NOT EXISTS (
                SELECT 1 FROM pg_inherits
                WHERE inhrelid = to_regclass(part || '_event_time_idx')
            ) THEN
                EXECUTE format('DROP INDEX IF EXISTS %I', part || '_event_time_idx');
            END IF;
            IF (SELECT a.amname FROM pg_class AS c JOIN pg_am AS a ON a.oid = c.relam
                WHERE c.oid = adopted) = 'brin' THEN
                EXECUTE format('ALTER INDEX %s SET (autosummarize = off)', adopted);
            END IF;
        END IF;
    END IF;
END;
$$;
