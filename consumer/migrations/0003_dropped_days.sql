-- 0003: dropped_days, the days whose raw partition retention dropped, and the partition
-- functions that keep them dropped (ensure_events_partition refuses them; the new
-- drop_events_partition records them as it drops): schema.sql says why.
--
-- The table is created once (a database that has it already is left alone). An earlier
-- database's dropped days are found from what they left: rollups without a partition, and
-- partitions holding fewer events than their rollups count (recreated by late events after
-- retention). Cost: one pass over daily_stats.
--
-- Consumers of the previous release keep working: they call ensure_events_partition(d) with
-- the same signature. But their retention drops partitions without recording them, and one
-- of them that starts after this migration re-applies its own schema, which puts back the
-- previous ensure_events_partition. If that happened, apply this file again (it is
-- idempotent): `DELETE FROM schema_migrations WHERE version = 3`, then migrate.

DO $$
BEGIN
    IF to_regclass('dropped_days') IS NULL THEN
        CREATE TABLE dropped_days (
            day         date        PRIMARY KEY,
            dropped_at  timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO dropped_days (day)
        SELECT day FROM (SELECT DISTINCT day FROM daily_stats) d
        WHERE to_regclass(format('events_%s', to_char(day, 'YYYYMMDD'))) IS NULL;
        -- Rollups count more events than the partition holds: its rows went with a drop.
        -- Counted exactly only where the statistics allow it (never analyzed, or fewer rows
        -- estimated than counted): recent and recreated partitions, not the whole table.
        INSERT INTO dropped_days (day)
        SELECT r.day
        FROM (SELECT day, sum(events) AS events FROM daily_stats GROUP BY day) r
        JOIN pg_class c ON c.oid = to_regclass(format('events_%s', to_char(r.day, 'YYYYMMDD')))
        WHERE CASE WHEN c.reltuples < 0 OR c.reltuples < r.events
                   THEN r.events > (SELECT count(*) FROM events e WHERE e.day = r.day)
                   ELSE false END;
    END IF;
END $$;

-- Creates the partition of `events` holding day `d` if it is missing, unless retention
-- dropped that day: then it raises SQLSTATE 22023 (the data's fault: the consumer sets those
-- events aside with the message as reason). Serialized by an advisory lock so that two
-- consumers meeting a new day at once do not collide, and so that retention cannot drop a
-- day between the check and the creation. Its locks wait at most lock_timeout (SQLSTATE
-- 55P03 after: a database-side error, retried): CREATE TABLE … PARTITION OF takes an ACCESS
-- EXCLUSIVE lock on `events`, and waiting behind a long reader would queue every batch too.
CREATE OR REPLACE FUNCTION ensure_events_partition(d date) RETURNS void
LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
DECLARE
    part text := format('events_%s', to_char(d, 'YYYYMMDD'));
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
END;
$$;

-- Drops the partition of day `d` (retention) and records the day in dropped_days, in one
-- transaction; returns whether there was a partition. Same lock and lock_timeout as above.
CREATE OR REPLACE FUNCTION drop_events_partition(d date) RETURNS boolean
LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
DECLARE
    part text := format('events_%s', to_char(d, 'YYYYMMDD'));
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('events partitions'));
    INSERT INTO dropped_days (day) VALUES (d) ON CONFLICT DO NOTHING;
    IF to_regclass(part) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', part);
    RETURN true;
END;
$$;
