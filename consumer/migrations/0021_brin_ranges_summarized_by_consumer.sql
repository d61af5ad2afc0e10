-- 0021: the consumer summarizes the new block ranges of each day's BRIN index on
-- event_time (consumer/brin_ranges.py), and autovacuum no longer does (autosummarize off).
-- autosummarize keeps at most 256 requests per database between autovacuum's visits; past
-- that, at a few thousand events a second or in any backlog, it refuses each one with a LOG
-- line carrying the whole batch statement, and leaves the range unsummarized
-- (docs/decisions/0001-brin-index-on-events.md).
--
-- - Each existing day's index gets autosummarize off; ensure_events_partition sets it off on
--   every day it creates. The partitioned index events_time keeps its option: PostgreSQL
--   cannot change it on a partitioned index, and nothing reads it but the creation of a
--   partition.
-- - Ranges written before this migration and not summarized yet are summarized by the first
--   pass of a replica of this release (every partition, once).
--
-- Locks: ALTER INDEX … SET (autosummarize) takes SHARE UPDATE EXCLUSIVE on each day's index,
-- which inserts and questions do not wait for; it waits for a VACUUM of that day.
--
-- Consumers of the previous release keep working beside it; while only they run, nothing
-- summarizes new ranges but VACUUM, and edge queries read those ranges whole.
DO $$
DECLARE
    time_index regclass;
BEGIN
    FOR time_index IN
        SELECT h.inhrelid::regclass FROM pg_inherits AS h
        WHERE h.inhparent = 'events_time'::regclass
        ORDER BY 1
    LOOP
        EXECUTE format('ALTER INDEX %s SET (autosummarize = off)', time_index);
    END LOOP;
END;
$$;

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
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
        part, d, d + 1);
    -- The consumer summarizes the new ranges (consumer/brin_ranges.py), not autovacuum.
    SELECT i.indexrelid::regclass INTO time_index
    FROM pg_index AS i
    JOIN pg_inherits AS h ON h.inhrelid = i.indexrelid AND h.inhparent = 'events_time'::regclass
    WHERE i.indrelid = part::regclass;
    EXECUTE format('ALTER INDEX %s SET (autosummarize = off)', time_index);
END;
$$;
