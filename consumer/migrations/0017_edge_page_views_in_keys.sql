-- 0017: the primary keys of hourly_paths and quarter_hour_paths carry page_views (INCLUDE), so
-- that ranking the pages of a range in another zone reads its edge hours and quarter hours
-- from the index alone instead of one row (with its visitors sketch) a path
-- (docs/decisions/0034-edge-page-views-in-keys.md). An upsert of these rows already writes a
-- new key entry nearly every time (page views change, the sketch keeps the row from fitting
-- its page again), so the consumer pays for the wider entries, not for more of them.
--
-- Cost: each key is built again under an ACCESS EXCLUSIVE lock on its table: consumers'
-- batches wait (and retry) and stats questions reading these tables wait for it (or give up
-- after the API's lock_timeout). The bench's 10M-event month (666k + 1.7M rows) took 4.5 s.
-- Consumers of the previous release keep working: their upserts name the same columns. Both
-- tables are locked first, in the order batches lock them (consumer/rollups): taking them one
-- by one, in another order, deadlocks with a batch that holds the first and waits for the other.
LOCK TABLE quarter_hour_paths, hourly_paths IN ACCESS EXCLUSIVE MODE;
ALTER TABLE hourly_paths
    DROP CONSTRAINT hourly_paths_pkey,
    ADD PRIMARY KEY (site_id, hour, path) INCLUDE (page_views);
ALTER TABLE quarter_hour_paths
    DROP CONSTRAINT quarter_hour_paths_pkey,
    ADD PRIMARY KEY (site_id, bucket, path) INCLUDE (page_views);
