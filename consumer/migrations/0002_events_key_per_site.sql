-- 0002: events keyed by (day, event_id, site_id) instead of (day, event_id), so one site's
-- emitter cannot suppress another site's events by reusing their ids. The id comes before
-- the site: ids are mostly time-ordered (UUIDv7), so new keys land at the index's right edge
-- (docs/decisions/0019-events-key-order.md).
--
-- Cost: a new unique index is built on every partition, under an ACCESS EXCLUSIVE lock on
-- `events` held until this migration commits; consumers' batches and raw-event reads of the
-- stats API wait meanwhile (nothing is lost: batches resume). The build sorts every raw row,
-- so a table of hundreds of millions of rows means minutes: run it at a quiet hour.
-- Waiting for the lock is bounded by the migration's lock_timeout: a consumer batch or a long
-- stats query in the way makes it fail with SQLSTATE 55P03 and a hint, rather than queue
-- every other session behind it.
--
-- Consumers of the previous release keep working once it is done: their insert says
-- `ON CONFLICT DO NOTHING` without naming the key, so it follows the new one (a retry carries
-- the same site and id, so nothing counts twice).
--
-- The key's columns are checked first: a database re-keyed before versions were recorded
-- is left alone.
DO $$
DECLARE
    pkey  name;
    cols  text[];
BEGIN
    SELECT c.conname, array_agg(a.attname::text ORDER BY k.ord)
    INTO pkey, cols
    FROM pg_constraint c
    CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
    WHERE c.conrelid = 'events'::regclass AND c.contype = 'p'
    GROUP BY c.conname;
    -- (day, site_id, event_id) is what development builds before this release had.
    IF cols IN (ARRAY['day', 'event_id'], ARRAY['day', 'site_id', 'event_id']) THEN
        BEGIN
            -- Locks the partitions too, so no later step of the change waits for a lock.
            LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION USING
                ERRCODE = 'lock_not_available',
                MESSAGE = format('could not lock table events within %s to re-key it by '
                                 '(day, event_id, site_id); nothing was changed',
                                 current_setting('lock_timeout')),
                HINT = 'Another session holds it (a consumer batch, a long stats query, a '
                       'rebuild): see pg_locks / pg_stat_activity. Apply the schema again at a '
                       'quieter moment (`python -m consumer.migrate`), or stop the consumers of '
                       'the previous version first.';
        END;
        EXECUTE format('ALTER TABLE events DROP CONSTRAINT %I', pkey);
        ALTER TABLE events ADD PRIMARY KEY (day, event_id, site_id);
    END IF;
END $$;
