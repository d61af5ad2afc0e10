-- 0019: the realtime count's index keys the quarter hour of a visit's last event
-- (last_bucket, 0018) instead of its time, which every batch that extends the visit changes
-- (docs/decisions/0035-visits-updated-in-place.md).
--
-- Locks: the build reads the whole table under SHARE (questions go on, batches wait); the
-- drop then takes ACCESS EXCLUSIVE until the commit that follows it. The bench's 10M-event
-- month (8M visits, 1.9 GB, in the OS's page cache) took about a second.
--
-- API processes of the previous release count realtime visitors with `last_at`, which no
-- index leads to any more: each reads all of a site's visits, up to the statement timeout,
-- once per site every 5 s. Replace them right after migrating (docs/operations.md).
CREATE INDEX visits_active ON visits (site_id, last_bucket) WHERE last_bucket IS NOT NULL;
DROP INDEX visits_recent;
